//! The processed-event table that makes consumers idempotent.
//!
//! A consumer claims an event in the same transaction as the state change it causes. If
//! the claim finds the event already there, the change was made before (the message is a
//! redelivery) and the consumer does nothing.

use crate::event::Event;
use diesel::pg::PgConnection;
use diesel::prelude::*;

diesel::table! {
    processed_events (event_id) {
        event_id -> Uuid,
        event_type -> Text,
        processed_at -> Timestamptz,
    }
}

/// Records `event` as handled. Returns `false` if it had been handled already.
pub fn claim(conn: &mut PgConnection, event: &Event) -> QueryResult<bool> {
    let inserted = diesel::insert_into(processed_events::table)
        .values((
            processed_events::event_id.eq(event.event_id),
            processed_events::event_type.eq(event.event_type().as_str()),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(inserted == 1)
}
