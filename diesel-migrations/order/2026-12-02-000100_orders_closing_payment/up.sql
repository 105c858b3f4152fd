-- CLOSING_PAYMENT: the payment deadline passed and the order waits for payment to say
-- whether the shopper paid (completed) or not (cancelled), instead of cancelling on its own.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('PENDING_PAYMENT', 'CLOSING_PAYMENT', 'COMPLETED', 'CANCELLING', 'CANCELLED'));
