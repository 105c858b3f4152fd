//! What a [`ProcStack`](super::ProcStack) is made of: its parts (processes), the ports
//! they keep for the stack's life, and the services' two databases.

use std::net::TcpListener;

/// One process of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Kafka,
    Mongo,
    Smtp,
    KakaoPay,
    Payment,
    Order,
    Notifier,
    /// More notifier instances in the same consumer group (not started by default).
    Notifier2,
    Notifier3,
}

impl Part {
    pub const ALL: [Part; 9] = [
        Part::Kafka,
        Part::Mongo,
        Part::Smtp,
        Part::KakaoPay,
        Part::Payment,
        Part::Order,
        Part::Notifier,
        Part::Notifier2,
        Part::Notifier3,
    ];
    pub const SERVICES: [Part; 3] = [Part::Payment, Part::Order, Part::Notifier];

    pub fn name(self) -> &'static str {
        match self {
            Part::Kafka => "tansu",
            Part::Mongo => "nx-27017",
            Part::Smtp => "smtp-sink",
            Part::KakaoPay => "kakaopay-sim",
            Part::Payment => "payment",
            Part::Order => "order",
            Part::Notifier => "notifier",
            Part::Notifier2 => "notifier-2",
            Part::Notifier3 => "notifier-3",
        }
    }

    /// Serves HTTP with `/readyz` (or `/healthz` for the simulator).
    pub(super) fn is_http(self) -> bool {
        matches!(
            self,
            Part::KakaoPay
                | Part::Payment
                | Part::Order
                | Part::Notifier
                | Part::Notifier2
                | Part::Notifier3
        )
    }
}

/// The ports, fixed for the stack's life so URLs handed out survive restarts.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub kafka: u16,
    pub mongo: u16,
    pub smtp: u16,
    pub kakaopay: u16,
    pub payment: u16,
    pub order: u16,
    pub notifier: u16,
    pub notifier2: u16,
    pub notifier3: u16,
    /// The private PostgreSQL servers'
    /// ([`Options::private_postgres`](super::Options::private_postgres)).
    pub postgres_orders: u16,
    pub postgres_payments: u16,
}

impl Ports {
    pub(super) fn pick() -> anyhow::Result<Self> {
        // Hold every listener until all are chosen, so no two parts get the same port.
        let listeners: Vec<TcpListener> = (0..11)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        let port = |n: usize| -> anyhow::Result<u16> { Ok(listeners[n].local_addr()?.port()) };
        Ok(Self {
            kafka: port(0)?,
            mongo: port(1)?,
            smtp: port(2)?,
            kakaopay: port(3)?,
            payment: port(4)?,
            order: port(5)?,
            notifier: port(6)?,
            postgres_orders: port(7)?,
            postgres_payments: port(8)?,
            notifier2: port(9)?,
            notifier3: port(10)?,
        })
    }

    pub fn of(&self, part: Part) -> u16 {
        match part {
            Part::Kafka => self.kafka,
            Part::Mongo => self.mongo,
            Part::Smtp => self.smtp,
            Part::KakaoPay => self.kakaopay,
            Part::Payment => self.payment,
            Part::Order => self.order,
            Part::Notifier => self.notifier,
            Part::Notifier2 => self.notifier2,
            Part::Notifier3 => self.notifier3,
        }
    }
}

/// The services' two databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Db {
    Orders,
    Payments,
}

impl Db {
    pub const ALL: [Db; 2] = [Db::Orders, Db::Payments];

    pub fn name(self) -> &'static str {
        match self {
            Db::Orders => "orders",
            Db::Payments => "payments",
        }
    }
}
