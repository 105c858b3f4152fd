-- The trace of the order the payment belongs to (W3C traceparent, taken from the
-- OrderPlaced event). Kakao Pay's redirects carry no trace context, so the shopper's
-- return to the approval, cancel and fail URLs continues this trace.
ALTER TABLE payments ADD COLUMN traceparent TEXT;
