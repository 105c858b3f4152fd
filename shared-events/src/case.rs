//! The seed's four architectures of the same shop. The services and their domain code are
//! the same in every case; a case only selects adapters (how events travel, which
//! database driver runs the SQL, how mail is sent and where its history is kept).
//!
//! Every service reads the case from `SAGA_CASE` (default 3, the product); `infra/stack up
//! --case N` sets it for the whole stack.
//!
//! | case | order ↔ payment ↔ mail | order/payment database access | mail service |
//! |---|---|---|---|
//! | 1 | synchronous HTTP inside the request | Diesel + r2d2 (blocking pool) | blocking, history in PostgreSQL |
//! | 2 | Kafka (outbox → topic → consumer) | Diesel + r2d2 (blocking pool) | blocking (thread pool, sync SMTP), history in PostgreSQL |
//! | 3 | Kafka | Diesel + r2d2 (blocking pool) | Tokio-native, history in MongoDB |
//! | 4 | Kafka | diesel-async (async pool) | Tokio-native, history in MongoDB |
//!
//! Case 4 selects the async pool of `sql::Database` (`Database::for_case`, called
//! by the services' `persistence` modules); background work stays on the blocking pool.

use std::fmt;

/// Which of the seed's architectures a process runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Case {
    /// Case 1: a synchronous HTTP chain; order-service orchestrates compensation.
    SyncChain,
    /// Case 2: Kafka between services, a blocking mail service with its history in
    /// PostgreSQL.
    KafkaBlockingMail,
    /// Case 3, the product: Kafka, Diesel on a blocking pool, the Tokio notifier.
    #[default]
    Product,
    /// Case 4: as case 3 with order and payment on an async PostgreSQL driver.
    AsyncDb,
}

impl Case {
    pub const ALL: [Case; 4] = [
        Case::SyncChain,
        Case::KafkaBlockingMail,
        Case::Product,
        Case::AsyncDb,
    ];

    /// The case's number in the seed's table.
    pub fn number(self) -> u8 {
        match self {
            Case::SyncChain => 1,
            Case::KafkaBlockingMail => 2,
            Case::Product => 3,
            Case::AsyncDb => 4,
        }
    }

    pub fn from_number(number: u8) -> Option<Case> {
        Case::ALL.into_iter().find(|case| case.number() == number)
    }

    /// Whether events travel over Kafka (cases 2–4) rather than synchronous HTTP.
    pub fn uses_kafka(self) -> bool {
        self != Case::SyncChain
    }

    /// Whether mail goes through the blocking mail service with its history in
    /// PostgreSQL (cases 1 and 2) rather than the Tokio notifier with MongoDB.
    pub fn blocking_mail(self) -> bool {
        matches!(self, Case::SyncChain | Case::KafkaBlockingMail)
    }

    /// Whether order and payment run their SQL on the async driver (case 4).
    pub fn async_db(self) -> bool {
        self == Case::AsyncDb
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("SAGA_CASE must be 1, 2, 3 or 4, not {0:?}")]
pub struct UnknownCase(String);

impl std::str::FromStr for Case {
    type Err = UnknownCase;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<u8>()
            .ok()
            .and_then(Case::from_number)
            .ok_or_else(|| UnknownCase(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_nonsense_is_refused() {
        for case in Case::ALL {
            assert_eq!(case.to_string().parse::<Case>().unwrap(), case);
        }
        assert!("5".parse::<Case>().is_err());
        assert!("three".parse::<Case>().is_err());
        assert_eq!(Case::default(), Case::Product);
    }
}
