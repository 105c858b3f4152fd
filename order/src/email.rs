//! The shopper's e-mail address: the one piece of input that ends up in a mail header.
//!
//! An address is accepted only as a bare `local@domain` (RFC 5321 lengths: at most 254
//! characters, the local part at most 64) with a domain of at least two labels
//! (`example.com`, not `localhost`), no display name, no domain literal (`[127.0.0.1]`),
//! and no control character anywhere — CR/LF in particular, which would let a caller
//! write their own mail headers. The grammar itself is the `email_address` crate's.
//! There are no exceptions for the local stack: its tests and demo use `example.com`.

use email_address::{EmailAddress, Options};
use shared_events::http::InvalidParam;

/// RFC 5321 §4.5.3.1.3: a path is at most 256 octets including `<` and `>`.
pub const MAX_EMAIL_LEN: usize = 254;
/// RFC 5321 §4.5.3.1.1.
pub const MAX_LOCAL_PART_LEN: usize = 64;

/// The address `field` names, trimmed of surrounding spaces, or why it is refused.
pub fn parse(field: &str, raw: &str) -> Result<String, InvalidParam> {
    let refuse = |reason: &str| Err(InvalidParam::new(field, reason));
    // Checked on the raw input: a trailing "\r\n" is refused, not trimmed away.
    if raw.chars().any(is_line_or_control) {
        return refuse("must not contain control characters or line breaks");
    }
    let address = raw.trim();
    if address.len() > MAX_EMAIL_LEN {
        return Err(InvalidParam::new(
            field,
            format!("must be at most {MAX_EMAIL_LEN} characters"),
        ));
    }
    let options = Options::default()
        .with_required_tld()
        .without_display_text()
        .without_domain_literal();
    let parsed = match EmailAddress::parse_with_options(address, options) {
        Ok(parsed) => parsed,
        Err(email_address::Error::DomainTooFew) => {
            return refuse("must have a domain with a dot, such as example.com")
        }
        Err(email_address::Error::LocalPartTooLong) => {
            return Err(InvalidParam::new(
                field,
                format!("must have at most {MAX_LOCAL_PART_LEN} characters before the @"),
            ))
        }
        Err(_) => return refuse("must be a valid e-mail address, such as kim@example.com"),
    };
    if parsed.local_part().len() > MAX_LOCAL_PART_LEN {
        return Err(InvalidParam::new(
            field,
            format!("must have at most {MAX_LOCAL_PART_LEN} characters before the @"),
        ));
    }
    Ok(address.to_owned())
}

/// C0/C1 controls, DEL, and the Unicode line and paragraph separators.
fn is_line_or_control(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(raw: &str) -> String {
        parse("customer_email", raw).expect_err(raw).reason
    }

    #[test]
    fn plain_addresses_are_accepted_and_trimmed() {
        assert_eq!(
            parse("customer_email", " kim@example.com ").expect("valid"),
            "kim@example.com"
        );
        assert!(parse("e", "first.last+tag@mail.example.co.kr").is_ok());
        let longest_local = format!("{}@example.com", "a".repeat(64));
        assert!(parse("e", &longest_local).is_ok());
    }

    #[test]
    fn line_breaks_and_control_characters_are_refused_anywhere() {
        for raw in [
            "kim@example.com\r\nBcc: all@example.com",
            "kim@example.com\n",
            "\rkim@example.com",
            "k\u{0}im@example.com",
            "kim@exa\tmple.com",
            "kim@example.com\u{2028}",
            "kim\u{7f}@example.com",
        ] {
            assert!(reason(raw).contains("control characters"), "{raw:?}");
        }
    }

    #[test]
    fn display_names_huge_inputs_and_dotless_domains_are_refused() {
        let huge = format!("{} <kim@example.com>", "A".repeat(60_000));
        assert!(reason(&huge).contains("at most 254"));
        assert!(reason("Kim <kim@example.com>").contains("valid e-mail"));
        assert!(reason("a.b@localhost").contains("a dot"));
        assert!(reason("kim@[127.0.0.1]").contains("valid e-mail"));
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(reason(&long_local).contains("at most 64"));
        let long_total = format!("kim@{}.com", "d".repeat(250));
        assert!(reason(&long_total).contains("at most 254"));
        assert!(reason("not-an-email").contains("valid e-mail"));
    }
}
