-- Wakes the requests waiting for an order to change (GET /orders/{id} with a wait,
-- GET /orders/{id}/events) on every instance, whichever instance made the change: each
-- instance LISTENs on `order_changed`. Delivered at commit, so a woken waiter reads the
-- committed row. Per row, because the payload names the order.
CREATE FUNCTION orders_notify_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('order_changed', NEW.id::text);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER orders_changed AFTER INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_notify_changed();
