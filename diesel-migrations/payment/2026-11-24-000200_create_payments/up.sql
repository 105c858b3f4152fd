CREATE TABLE payments (
    id UUID PRIMARY KEY,
    -- One payment per order: redelivered OrderPlaced events find it and stop.
    order_id UUID NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('REQUESTED', 'READY', 'APPROVING', 'APPROVED', 'FAILED', 'REFUNDING', 'REFUNDED')),
    amount BIGINT NOT NULL CHECK (amount > 0),
    item_name TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    partner_user_id TEXT NOT NULL,
    -- The order as OrderPlaced described it, carried into later events for the mails.
    order_snapshot JSONB NOT NULL,
    tid TEXT UNIQUE,
    redirect_url TEXT,
    mobile_redirect_url TEXT,
    payment_method TEXT,
    failure_reason TEXT,
    error_code INTEGER,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ready_at TIMESTAMPTZ,
    approved_at TIMESTAMPTZ,
    failed_at TIMESTAMPTZ,
    refunded_amount BIGINT,
    refunded_at TIMESTAMPTZ
);

-- Every call to the payment gateway, for operators and for latency figures.
CREATE TABLE gateway_calls (
    id BIGSERIAL PRIMARY KEY,
    payment_id UUID NOT NULL REFERENCES payments (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('ready', 'approve', 'cancel', 'order')),
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'rejected', 'transient', 'unknown')),
    error_code INTEGER,
    http_status INTEGER,
    latency_ms DOUBLE PRECISION NOT NULL,
    called_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX gateway_calls_payment ON gateway_calls (payment_id, id);
