ALTER TABLE order_items DROP COLUMN sku;
DROP TABLE products;
