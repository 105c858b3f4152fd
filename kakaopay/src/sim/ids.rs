//! The simulator's identifiers, shaped as Kakao Pay's: `tid`/`aid` and the one-time
//! `pg_token`.

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;

/// A 20-character id: the prefix letter and 19 digits (`T…` tid, `A…` aid).
pub(crate) fn new_id(prefix: char) -> String {
    let digits: u64 = rand::rng().random_range(0..10_000_000_000_000_000_000);
    format!("{prefix}{digits:019}")
}

/// A one-time 20-character `pg_token`.
pub(crate) fn new_pg_token() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shape() {
        for prefix in ['T', 'A'] {
            let id = new_id(prefix);
            assert_eq!(id.len(), 20);
            assert!(id.starts_with(prefix));
            assert!(id[1..].chars().all(|c| c.is_ascii_digit()), "{id}");
        }
        let token = new_pg_token();
        assert_eq!(token.len(), 20);
        assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
