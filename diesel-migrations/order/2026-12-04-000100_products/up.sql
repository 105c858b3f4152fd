-- The shop's catalog: an order names a sku and a quantity, and the order service prices
-- it from here (a client never sets a price, unless ORDER_ALLOW_CUSTOM_ITEMS is on).
CREATE TABLE products (
    sku TEXT PRIMARY KEY CHECK (sku ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    name_ko TEXT NOT NULL CHECK (length(name_ko) BETWEEN 1 AND 100),
    name_en TEXT NOT NULL CHECK (length(name_en) BETWEEN 1 AND 100),
    -- Whole KRW.
    price BIGINT NOT NULL CHECK (price > 0 AND price <= 100000000),
    in_stock BOOLEAN NOT NULL DEFAULT true,
    -- Where the storefront lists it.
    position INTEGER NOT NULL DEFAULT 0
);

-- A small demo catalog (a coffee roaster's).
INSERT INTO products (sku, name_ko, name_en, price, in_stock, position) VALUES
    ('house-blend-200g', '하우스 블렌드 원두 200g', 'House blend beans 200 g', 12000, true, 1),
    ('ethiopia-yirgacheffe-200g', '에티오피아 예가체프 200g', 'Ethiopia Yirgacheffe 200 g', 16500, true, 2),
    ('colombia-decaf-200g', '콜롬비아 디카페인 200g', 'Colombia decaf 200 g', 15000, true, 3),
    ('drip-bags-10', '드립백 10개입', 'Drip bags, box of 10', 9900, true, 4),
    ('ceramic-dripper', '세라믹 드리퍼', 'Ceramic dripper', 28000, true, 5),
    ('paper-filters-100', '종이 필터 100매', 'Paper filters, 100', 4500, true, 6),
    ('hand-grinder', '핸드 그라인더', 'Hand grinder', 89000, false, 7);

-- Which product a line is (NULL for a free-form line). No foreign key: the line records
-- what was sold, even if the product later leaves the catalog.
ALTER TABLE order_items ADD COLUMN sku TEXT;
