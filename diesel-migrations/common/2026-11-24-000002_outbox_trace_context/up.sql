-- The W3C trace context of the transaction that wrote the event; the relay publishes it
-- as the message's `traceparent` header, so the consumer continues the same trace.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
