//! Reading what the SMTP sink received: one file per message in a Maildir.

use mail_parser::MessageParser;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
}

/// One received mail, parsed.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub from: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub message_id: Option<String>,
    pub has_date: bool,
}

impl Maildir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Every mail addressed to `recipient`, oldest first.
    pub fn to(&self, recipient: &str) -> Vec<Mail> {
        let mut files: Vec<_> = ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.root.join(sub)).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let modified = entry.metadata().and_then(|m| m.modified()).ok()?;
                Some((modified, entry.path()))
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| std::fs::read(path).ok())
            .filter(|raw| contains(raw, recipient.as_bytes()))
            .filter_map(|raw| parse(&raw, true))
            .filter(|mail| mail.to.iter().any(|to| to.eq_ignore_ascii_case(recipient)))
            .collect()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Parses one message; without `bodies` its text and HTML are left out (a big load's
/// index keeps only what it counts).
pub(crate) fn parse(raw: &[u8], bodies: bool) -> Option<Mail> {
    let message = MessageParser::default().parse(raw)?;
    let addresses = |address: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        address
            .map(|a| {
                a.iter()
                    .filter_map(|addr| addr.address().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(Mail {
        to: addresses(message.to()),
        from: addresses(message.from()),
        subject: message.subject().unwrap_or_default().to_owned(),
        text: bodies
            .then(|| message.body_text(0).map(|t| t.into_owned()))
            .flatten()
            .unwrap_or_default(),
        html: bodies
            .then(|| message.body_html(0).map(|h| h.into_owned()))
            .flatten(),
        message_id: message.message_id().map(str::to_owned),
        has_date: message.date().is_some(),
    })
}
