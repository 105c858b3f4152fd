// @generated automatically by Diesel CLI.

diesel::table! {
    mail_history (id) {
        id -> Uuid,
        event_id -> Uuid,
        event_type -> Text,
        order_id -> Uuid,
        recipient -> Text,
        kind -> Text,
        locale -> Text,
        status -> Text,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        subject -> Text,
        smtp_message_id -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
        event_occurred_at -> Timestamptz,
    }
}
