DROP INDEX payments_unsettled;
ALTER TABLE payments DROP COLUMN next_check_at;
ALTER TABLE payments DROP COLUMN last_checked_at;
ALTER TABLE payments DROP COLUMN checks;
ALTER TABLE payments DROP COLUMN approval_unclear_at;
ALTER TABLE payments DROP COLUMN close_requested_at;
ALTER TABLE payments DROP COLUMN order_cancelled_at;
