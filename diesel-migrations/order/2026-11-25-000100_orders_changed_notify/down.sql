DROP TRIGGER IF EXISTS orders_changed ON orders;
DROP FUNCTION IF EXISTS orders_notify_changed();
