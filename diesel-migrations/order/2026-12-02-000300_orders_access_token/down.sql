ALTER TABLE orders DROP COLUMN access_token_hash;
