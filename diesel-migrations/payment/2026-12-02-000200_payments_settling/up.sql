-- Set when the order was cancelled: an APPROVED payment of a cancelled order is refunded,
-- whichever of OrderCancelled and the approval came first.
ALTER TABLE payments ADD COLUMN order_cancelled_at TIMESTAMPTZ;
-- Set when the order's deadline passed and it asked for the payment to be closed: the
-- payment can no longer be paid, and the order waits for the answer (PaymentClosed).
ALTER TABLE payments ADD COLUMN close_requested_at TIMESTAMPTZ;
-- Set when an approve's outcome was ever unclear (a timeout, a lost answer): the
-- reconciler keeps asking Kakao Pay about the payment even once it is back to READY.
ALTER TABLE payments ADD COLUMN approval_unclear_at TIMESTAMPTZ;
-- The reconciler's per-payment schedule: how often it has checked the payment without
-- settling it, when it last did, and not before when it checks again (capped
-- exponential backoff with jitter), so failing payments neither hammer Kakao Pay nor
-- starve the others (least recently checked first).
ALTER TABLE payments ADD COLUMN checks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN last_checked_at TIMESTAMPTZ;
ALTER TABLE payments ADD COLUMN next_check_at TIMESTAMPTZ;

CREATE INDEX payments_unsettled ON payments (last_checked_at NULLS FIRST, updated_at)
    WHERE status IN ('APPROVING', 'REFUNDING')
       OR (status = 'READY' AND approval_unclear_at IS NOT NULL)
       OR (status = 'APPROVED' AND order_cancelled_at IS NOT NULL);
