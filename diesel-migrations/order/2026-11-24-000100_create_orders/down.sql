DROP TABLE saga_steps;
DROP TABLE order_items;
DROP TABLE orders;
