-- The trace the order was placed in (W3C traceparent). Work on the order that no
-- incoming request or event carries a trace for (a shopper's cancel, the payment
-- deadline) continues this trace, so one order keeps one trace id.
ALTER TABLE orders ADD COLUMN traceparent TEXT;
