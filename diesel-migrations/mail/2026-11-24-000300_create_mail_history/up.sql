-- The blocking mail service's history (cases 1 and 2): one row per mail, that is per
-- (event, recipient). The unique key is what makes a redelivered event harmless: the
-- second delivery finds the row and sends nothing.
CREATE TABLE mail_history (
    id UUID PRIMARY KEY,
    event_id UUID NOT NULL,
    event_type TEXT NOT NULL,
    order_id UUID NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL
        CHECK (kind IN ('payment_completed', 'order_completed', 'order_cancelled', 'order_refunded')),
    locale TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'RETRYING', 'SENT', 'FAILED')),
    attempts INT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error TEXT,
    subject TEXT NOT NULL,
    smtp_message_id TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ,
    event_occurred_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT mail_history_one_mail_per_event_and_recipient UNIQUE (event_id, recipient)
);

-- The history API: newest first, by order or overall.
CREATE INDEX mail_history_by_order ON mail_history (order_id, created_at DESC, id DESC);
CREATE INDEX mail_history_newest ON mail_history (created_at DESC, id DESC);
