// @generated automatically by Diesel CLI.

diesel::table! {
    order_idempotency_keys (key_hash) {
        key_hash -> Bytea,
        request_hash -> Bytea,
        order_id -> Uuid,
        token_salt -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    order_items (order_id, line_no) {
        order_id -> Uuid,
        line_no -> Int4,
        name -> Text,
        quantity -> Int4,
        unit_price -> Int8,
        sku -> Nullable<Text>,
    }
}

diesel::table! {
    orders (id) {
        id -> Uuid,
        customer_id -> Text,
        customer_email -> Text,
        locale -> Text,
        status -> Text,
        total_amount -> Int8,
        cancel_reason -> Nullable<Text>,
        refunded_amount -> Nullable<Int8>,
        payment_deadline -> Timestamptz,
        payment_id -> Nullable<Uuid>,
        payment_tid -> Nullable<Text>,
        payment_status -> Nullable<Text>,
        payment_redirect_url -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
        cancelled_at -> Nullable<Timestamptz>,
        traceparent -> Nullable<Text>,
        access_token_hash -> Nullable<Bytea>,
    }
}

diesel::table! {
    products (sku) {
        sku -> Text,
        name_ko -> Text,
        name_en -> Text,
        price -> Int8,
        in_stock -> Bool,
        position -> Int4,
    }
}

diesel::table! {
    saga_steps (id) {
        id -> Int8,
        order_id -> Uuid,
        event_id -> Uuid,
        event_type -> Text,
        service -> Text,
        outcome -> Text,
        at -> Timestamptz,
    }
}

diesel::joinable!(order_idempotency_keys -> orders (order_id));
diesel::joinable!(order_items -> orders (order_id));

diesel::allow_tables_to_appear_in_same_query!(
    order_idempotency_keys,
    order_items,
    orders,
    products,
    saga_steps,
);
