-- The catalog's own schema. Deliberately not the monolith's: columns are renamed, prices are
-- integer cents in a table of their own (split out of legacy `products`), inventory is
-- `stock_levels`, and the two order tables are reduced to the projection the stock endpoint
-- needs. cdc-sync (sync.toml) maps legacy rows into these tables.
-- No foreign keys: rows arrive from replication in source commit order, and the initial
-- snapshot copies tables in parallel.

CREATE TABLE categories (
    id          BIGINT PRIMARY KEY,
    parent_id   BIGINT,
    title       TEXT NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    position    INTEGER NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE products (
    id          BIGINT PRIMARY KEY,
    sku         TEXT NOT NULL UNIQUE,
    title       TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    category_id BIGINT NOT NULL,
    attributes  JSONB NOT NULL DEFAULT '{}'::jsonb,
    tags        TEXT[] NOT NULL DEFAULT '{}',
    is_active   BOOLEAN NOT NULL DEFAULT true,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX products_category_id_idx ON products (category_id);

CREATE TABLE product_prices (
    product_id  BIGINT PRIMARY KEY,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    currency    CHAR(3) NOT NULL DEFAULT 'USD'
);

CREATE TABLE stock_levels (
    id          BIGINT PRIMARY KEY,
    product_id  BIGINT NOT NULL UNIQUE,
    sku         TEXT NOT NULL UNIQUE,
    on_hand     INTEGER NOT NULL,
    warehouse   TEXT NOT NULL DEFAULT 'MAIN',
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE order_states (
    id      BIGINT PRIMARY KEY,
    status  TEXT NOT NULL
);

CREATE TABLE open_order_lines (
    id          BIGINT PRIMARY KEY,
    order_id    BIGINT NOT NULL,
    product_id  BIGINT NOT NULL,
    qty         INTEGER NOT NULL
);
CREATE INDEX open_order_lines_product_id_idx ON open_order_lines (product_id);
