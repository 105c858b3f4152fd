ALTER TABLE orders DROP COLUMN traceparent;
