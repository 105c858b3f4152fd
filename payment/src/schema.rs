// @generated automatically by Diesel CLI.

diesel::table! {
    gateway_calls (id) {
        id -> Int8,
        payment_id -> Uuid,
        kind -> Text,
        outcome -> Text,
        error_code -> Nullable<Int4>,
        http_status -> Nullable<Int4>,
        latency_ms -> Float8,
        called_at -> Timestamptz,
    }
}

diesel::table! {
    payments (id) {
        id -> Uuid,
        order_id -> Uuid,
        status -> Text,
        amount -> Int8,
        item_name -> Text,
        quantity -> Int4,
        partner_user_id -> Text,
        order_snapshot -> Jsonb,
        tid -> Nullable<Text>,
        redirect_url -> Nullable<Text>,
        mobile_redirect_url -> Nullable<Text>,
        payment_method -> Nullable<Text>,
        failure_reason -> Nullable<Text>,
        error_code -> Nullable<Int4>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        ready_at -> Nullable<Timestamptz>,
        approved_at -> Nullable<Timestamptz>,
        failed_at -> Nullable<Timestamptz>,
        refunded_amount -> Nullable<Int8>,
        refunded_at -> Nullable<Timestamptz>,
        traceparent -> Nullable<Text>,
        order_cancelled_at -> Nullable<Timestamptz>,
        close_requested_at -> Nullable<Timestamptz>,
        approval_unclear_at -> Nullable<Timestamptz>,
        checks -> Int4,
        last_checked_at -> Nullable<Timestamptz>,
        next_check_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(gateway_calls -> payments (payment_id));

diesel::allow_tables_to_appear_in_same_query!(gateway_calls, payments,);
