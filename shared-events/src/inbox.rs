//! The processed-event table that makes consumers idempotent.
//!
//! A consumer claims an event in the same transaction as the state change it causes. If
//! the claim finds the event already there, the change was made before (the message is a
//! redelivery) and the consumer does nothing.

use crate::event::Event;
use crate::schema::processed_events;
use diesel::prelude::*;

/// The inbox row of an event; one insert statement for both drivers.
#[derive(Insertable)]
#[diesel(table_name = processed_events)]
struct Claim {
    event_id: uuid::Uuid,
    event_type: &'static str,
}

impl Claim {
    fn of(event: &Event) -> Self {
        Claim {
            event_id: event.event_id,
            event_type: event.event_type().as_str(),
        }
    }
}

/// Records `event` as handled, in the caller's transaction on either driver. Returns
/// `false` if it had been handled already.
pub async fn claim<C: crate::sql::Connection>(conn: &mut C, event: &Event) -> QueryResult<bool> {
    let inserted = conn
        .execute(
            diesel::insert_into(processed_events::table)
                .values(Claim::of(event))
                .on_conflict_do_nothing(),
        )
        .await?;
    Ok(inserted == 1)
}
