-- The SHA-256 of the order's access token (the shopper's capability, returned once by
-- POST /orders). The token itself is never stored. Orders placed before this column
-- existed have none: their personal data and their cancel are no longer reachable by id.
ALTER TABLE orders ADD COLUMN access_token_hash BYTEA;
