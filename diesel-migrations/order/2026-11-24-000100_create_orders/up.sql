CREATE TABLE orders (
    id UUID PRIMARY KEY,
    customer_id TEXT NOT NULL,
    customer_email TEXT NOT NULL,
    locale TEXT NOT NULL DEFAULT 'ko',
    status TEXT NOT NULL CHECK (status IN ('PENDING_PAYMENT', 'COMPLETED', 'CANCELLING', 'CANCELLED')),
    total_amount BIGINT NOT NULL CHECK (total_amount > 0),
    cancel_reason TEXT,
    -- Set once the shopper's money has been given back.
    refunded_amount BIGINT,
    payment_deadline TIMESTAMPTZ NOT NULL,
    -- What the order knows of its payment, from the payment service's events.
    payment_id UUID,
    payment_tid TEXT,
    payment_status TEXT,
    payment_redirect_url TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ,
    cancelled_at TIMESTAMPTZ
);

CREATE INDEX orders_pending_deadline ON orders (payment_deadline) WHERE status = 'PENDING_PAYMENT';

CREATE TABLE order_items (
    order_id UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no INTEGER NOT NULL,
    name TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_price BIGINT NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- Every step of every order's saga, written with the change it records, so an operator
-- can see where an order is and where it got stuck (GET /orders/{id}/timeline).
CREATE TABLE saga_steps (
    id BIGSERIAL PRIMARY KEY,
    order_id UUID NOT NULL,
    event_id UUID NOT NULL,
    event_type TEXT NOT NULL,
    -- The service that emitted the event.
    service TEXT NOT NULL,
    -- What the order service did with it: 'published', 'applied', 'ignored: …'.
    outcome TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX saga_steps_order ON saga_steps (order_id, id);
