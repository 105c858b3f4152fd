//! End-to-end tests: the shop against real PostgreSQL, Kafka (tansu), MongoDB (nx-27017)
//! and SMTP, with the Kakao Pay simulator. Run them with `infra/stack test`.

mod bad_input;
mod case4;
mod cases;
mod compensations;
mod engine;
mod flow;
mod guarantees;
mod migrations;
mod money;
mod rejoin;
mod restart;
mod retries;
mod startup;
mod strangers;
