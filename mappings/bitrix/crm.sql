-- The CRM schema the mappings in this directory write (PostgreSQL 14+, Supabase included).
--
-- Every table keeps its own primary key (uuid, or bigserial for cities) and carries the Bitrix id
-- as a UNIQUE natural key (bitrix_*_id): duplex upserts by that key and never writes the CRM's
-- own ids. Columns a Bitrix table does not feed (id, crm_note, …) belong to the CRM.
--
-- Rules the mappings rely on:
-- * Tables fed by several Bitrix tables (orders: b_sale_order + its properties; products:
--   b_iblock_element + b_catalog_price + the seller property) may get their rows in any order,
--   so every column but the key is nullable or has a default.
-- * A look-up column (order_items.order_id, orders.user_id, …) is NULL until the row it points
--   to exists; duplex fills it then. It must be nullable, and the natural-key column it is
--   resolved from (order_items.bitrix_order_id, …) wants an index.

CREATE TABLE IF NOT EXISTS cities (
    id                   bigserial PRIMARY KEY,
    bitrix_location_id   integer UNIQUE,          -- b_sale_location.ID
    bitrix_city_id       integer UNIQUE,          -- the site's city number (the order property
                                                  -- `city`), from the map site_city; NULL for
                                                  -- locations the map does not name
    bitrix_location_code varchar(100),            -- b_sale_location.CODE
    type_id              integer,
    parent_id            integer,
    name_ru              text,
    name_en              text,
    is_active            boolean NOT NULL DEFAULT true
);

-- A CRM created before cities had its location id: the column, then `duplex snapshot --table
-- cities` to fill it (bitrix_city_id then holds the site's city numbers, see maps.toml).
ALTER TABLE cities ADD COLUMN IF NOT EXISTS bitrix_location_id integer UNIQUE;

CREATE TABLE IF NOT EXISTS order_statuses (
    code       varchar(2) PRIMARY KEY,            -- b_sale_status.ID
    type       char(1),                           -- O order, D delivery
    sort       integer,
    color      varchar(10),
    crm_status text,                              -- the CRM's name for it (map order_status)
    name_ru    text,
    name_en    text
);

CREATE TABLE IF NOT EXISTS users (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bitrix_user_id integer UNIQUE,
    login          text,
    name           text,
    last_name      text,
    email          text,
    phone          text,
    is_active      boolean,
    created_at     timestamptz,
    last_login_at  timestamptz,
    metadata       jsonb,
    role           text NOT NULL DEFAULT 'customer'
);

CREATE TABLE IF NOT EXISTS sellers (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bitrix_seller_id integer UNIQUE,              -- b_iblock_element.ID in the shops infoblock
    name             text,
    slug             text,
    is_active        boolean,
    sort_order       integer,
    created_at       timestamptz,
    updated_at       timestamptz
);

CREATE TABLE IF NOT EXISTS products (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bitrix_product_id integer UNIQUE,             -- b_iblock_element.ID in the catalog infoblock
    name              text,
    slug              text,
    description       text,
    is_active         boolean,
    sort_order        integer,
    price             numeric(18,2),              -- b_catalog_price, base price type
    currency          char(3),
    bitrix_seller_id  integer,                    -- b_iblock_element_property (seller link)
    seller_id         uuid REFERENCES sellers (id) ON DELETE SET NULL,
    created_at        timestamptz,
    updated_at        timestamptz
);
CREATE INDEX IF NOT EXISTS products_bitrix_seller_id ON products (bitrix_seller_id);

CREATE TABLE IF NOT EXISTS orders (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bitrix_order_id   integer UNIQUE,
    order_number      varchar(100),
    status            text,                       -- CRM status (map order_status); goes back to Bitrix
    bitrix_status     varchar(2),
    total_amount      numeric(18,4),
    delivery_fee      numeric(18,4),
    discount_amount   numeric(18,4),
    currency          char(3),
    payment_status    text,                       -- paid / pending
    payment_method    text,                       -- cash / card / kaspi / transfer
    canceled          boolean,                    -- goes back to Bitrix
    canceled_at       timestamptz,
    cancel_reason     text,
    bitrix_user_id    integer,
    user_id           uuid REFERENCES users (id) ON DELETE SET NULL,
    comment           text,
    courier_comment   text,
    created_at        timestamptz,
    updated_at        timestamptz,
    status_changed_at timestamptz,
    source            text,
    metadata          jsonb,
    -- from the order properties (b_sale_order_props_value)
    recipient_name    text,
    recipient_phone   text,
    recipient_email   text,
    delivery_address  text,
    delivery_date     date,
    delivery_date_raw text,
    delivery_time     text,
    postcard_text     text,
    city_name         text,
    pickup            boolean,
    bitrix_city_id    integer,
    city_id           bigint REFERENCES cities (id) ON DELETE SET NULL,
    bitrix_shop_id    integer,
    seller_id         uuid REFERENCES sellers (id) ON DELETE SET NULL,
    -- the CRM's own
    crm_note          text
);
CREATE INDEX IF NOT EXISTS orders_status ON orders (status);
CREATE INDEX IF NOT EXISTS orders_bitrix_user_id ON orders (bitrix_user_id);
CREATE INDEX IF NOT EXISTS orders_bitrix_city_id ON orders (bitrix_city_id);
CREATE INDEX IF NOT EXISTS orders_bitrix_shop_id ON orders (bitrix_shop_id);

CREATE TABLE IF NOT EXISTS order_items (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    bitrix_basket_id  integer UNIQUE,             -- b_sale_basket.ID
    bitrix_order_id   integer,
    order_id          uuid REFERENCES orders (id) ON DELETE CASCADE,
    bitrix_product_id integer,
    product_id        uuid REFERENCES products (id) ON DELETE SET NULL,
    name              text,
    price             numeric(18,4),
    base_price        numeric(18,4),
    discount_price    numeric(18,4),
    quantity          numeric(18,4),
    currency          char(3),
    created_at        timestamptz,
    updated_at        timestamptz
);
CREATE INDEX IF NOT EXISTS order_items_bitrix_order_id ON order_items (bitrix_order_id);
CREATE INDEX IF NOT EXISTS order_items_bitrix_product_id ON order_items (bitrix_product_id);
