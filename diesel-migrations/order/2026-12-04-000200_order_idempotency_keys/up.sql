-- POST /orders with an Idempotency-Key: the first request's order, so a retried or
-- doubled request returns it instead of placing another. Kept at least 24 hours
-- (ORDER_IDEMPOTENCY_KEY_TTL); the order service deletes older keys.
CREATE TABLE order_idempotency_keys (
    -- SHA-256 of the key: the key itself derives the order's token (see below), so it
    -- is a secret of the client's and is not stored.
    key_hash BYTEA PRIMARY KEY CHECK (length(key_hash) = 32),
    -- SHA-256 of the request as parsed: the same key with another request is refused.
    request_hash BYTEA NOT NULL CHECK (length(request_hash) = 32),
    -- Written before its order in the same transaction (a concurrent twin waits on the
    -- key), hence checked at commit.
    order_id UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    -- The order's token is HMAC-SHA256(key, salt): a replay shows it again without the
    -- token being stored.
    token_salt BYTEA NOT NULL CHECK (length(token_salt) = 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX order_idempotency_keys_created ON order_idempotency_keys (created_at);
