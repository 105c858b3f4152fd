// @generated automatically by Diesel CLI.

diesel::table! {
    outbox (id) {
        id -> Int8,
        event_id -> Uuid,
        topic -> Text,
        message_key -> Text,
        event_type -> Text,
        payload -> Text,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
        traceparent -> Nullable<Text>,
    }
}

diesel::table! {
    processed_events (event_id) {
        event_id -> Uuid,
        event_type -> Text,
        processed_at -> Timestamptz,
    }
}

diesel::allow_tables_to_appear_in_same_query!(outbox, processed_events,);
