//! The three Bitrix sale tables the bench writes (`b_sale_order`, `b_sale_basket`,
//! `b_sale_order_props_value`, modern column lists from `SCHEMA.md`), their DDL on both servers,
//! their duplex mapping, and a deterministic generator of realistic rows.
//!
//! Every column carries its MariaDB type and a [`Gen`] that says how to fill it; the PostgreSQL
//! type follows from the MariaDB type the way duplex maps it (`int` → `integer`, text types →
//! `text`, `decimal(p,s)` → `numeric(p,s)`, `datetime` → `timestamp`, `date` → `date`,
//! `double` → `double precision`). PostgreSQL tables get one extra column the source lacks,
//! `applied_at timestamptz DEFAULT clock_timestamp()`, stamped when duplex inserts the row.

use std::borrow::Cow;

use chrono::{NaiveDate, NaiveDateTime};
use rand::rngs::StdRng;
use rand::RngExt;

/// One value of a generated row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(Cow<'static, str>),
    /// A decimal already rendered with its scale, e.g. `12345.6700`.
    Dec(String),
    Dt(NaiveDateTime),
    /// `'0000-00-00 00:00:00'`, which duplex turns into NULL.
    ZeroDt,
    Date(NaiveDate),
    Dbl(f64),
}

/// How a column is filled. Percentages are of rows.
#[derive(Debug, Clone, Copy)]
pub enum Gen {
    /// The row's own id.
    Id,
    /// The id of the row's order (baskets and properties).
    OrderId,
    Const(&'static str),
    /// An integer in `lo..=hi`, NULL in `null_pct` % of rows.
    Int(i64, i64, u32),
    /// `'Y'` in `yes_pct` % of rows, else `'N'`.
    Flag(u32),
    OneOf(&'static [&'static str]),
    /// A decimal in `0..max` with `scale` digits, NULL in `null_pct` % of rows.
    Money(u32, i64, u32),
    /// A datetime in 2023–2024, NULL in `null_pct` %, zero date in `zero_pct` % of rows.
    Dt(u32, u32),
    /// A date in 2023–2024, NULL in `null_pct` % of rows.
    Date(u32),
    /// `lo..=hi` Cyrillic words, NULL in `null_pct` % of rows.
    Words(usize, usize, u32),
    /// `len` lowercase hex digits, NULL in `null_pct` % of rows.
    Hex(usize, u32),
    /// The customer-facing order number, unique per order.
    AccountNumber,
    /// A double in `0..max` with two decimals.
    Double(f64),
    /// Basket item name: a flower bouquet.
    Product,
    /// Order property slot (0..8): its id, name, code and value.
    PropId,
    PropName,
    PropCode,
    PropValue,
    Null,
}

/// A column: its MariaDB name, its MariaDB type (with NULL/DEFAULT clauses) and its filler.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub mysql: &'static str,
    pub gen: Gen,
}

const fn col(name: &'static str, mysql: &'static str, gen: Gen) -> Column {
    Column { name, mysql, gen }
}

/// A source table: its name and columns; the first column is the primary key `ID`.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
}

/// Context of one generated row.
pub struct RowCtx<'a> {
    pub id: i64,
    pub order_id: i64,
    /// Position of the row within its order (order property slot, basket line).
    pub slot: usize,
    pub rng: &'a mut StdRng,
}

impl Table {
    /// `CREATE TABLE` for MariaDB (InnoDB, primary key only).
    pub fn mysql_ddl(&self) -> String {
        self.mysql_ddl_as(self.name, &[])
    }

    /// `CREATE TABLE` for MariaDB under `name`, with `extra` column definitions after the
    /// table's own columns (e.g. a MariaDB-only apply timestamp).
    pub fn mysql_ddl_as(&self, name: &str, extra: &[&str]) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("  `{}` {}", c.name, c.mysql))
            .chain(extra.iter().map(|e| format!("  {e}")))
            .collect();
        format!(
            "CREATE TABLE `{name}` (\n{},\n  PRIMARY KEY (`ID`)\n) ENGINE=InnoDB",
            cols.join(",\n")
        )
    }

    /// `CREATE TABLE` for PostgreSQL under `name`: the mapped columns (all nullable but the
    /// key, since zero dates arrive as NULL) plus `applied_at`.
    pub fn pg_ddl(&self, name: &str) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("  {} {}", c.name.to_lowercase(), pg_type(c.mysql)))
            .collect();
        format!(
            "CREATE TABLE {name} (\n{},\n  applied_at timestamptz DEFAULT clock_timestamp(),\n  \
             PRIMARY KEY (id)\n)",
            cols.join(",\n")
        )
    }

    /// The duplex mapping entry for this table (same name on both sides, every column).
    pub fn mapping(&self) -> String {
        format!(
            "[[table]]\nsource = \"{0}\"\ntarget = \"{0}\"\ncolumns = \"all\"\n",
            self.name
        )
    }

    /// Lower-case column names, comma separated (for PostgreSQL statements).
    pub fn pg_columns(&self) -> String {
        let names: Vec<String> = self.columns.iter().map(|c| c.name.to_lowercase()).collect();
        names.join(", ")
    }

    /// The values of one row.
    pub fn row(&self, ctx: &mut RowCtx<'_>) -> Vec<Cell> {
        self.columns.iter().map(|c| c.gen.value(ctx)).collect()
    }
}

/// The PostgreSQL type duplex maps a MariaDB column type to.
pub fn pg_type(mysql: &str) -> String {
    let lower = mysql.to_ascii_lowercase();
    let base = lower.split(['(', ' ']).next().unwrap_or_default();
    match base {
        "int" => "integer".into(),
        "char" | "varchar" | "text" | "mediumtext" => "text".into(),
        "datetime" => "timestamp".into(),
        "date" => "date".into(),
        "double" => "double precision".into(),
        "decimal" => {
            let args: String = lower
                .split_once('(')
                .and_then(|(_, rest)| rest.split_once(')'))
                .map(|(args, _)| args.replace(' ', ""))
                .expect("decimal has (precision,scale)");
            format!("numeric({args})")
        }
        other => panic!("no PostgreSQL type for MariaDB type {other}"),
    }
}

impl Gen {
    fn value(self, ctx: &mut RowCtx<'_>) -> Cell {
        let rng = &mut *ctx.rng;
        match self {
            Gen::Id => Cell::Int(ctx.id),
            Gen::OrderId => Cell::Int(ctx.order_id),
            Gen::Const(s) => Cell::Text(Cow::Borrowed(s)),
            Gen::Int(lo, hi, null_pct) => {
                maybe(rng, null_pct, |r| Cell::Int(r.random_range(lo..=hi)))
            }
            Gen::Flag(yes_pct) => {
                Cell::Text(Cow::Borrowed(if pct(rng, yes_pct) { "Y" } else { "N" }))
            }
            Gen::OneOf(options) => {
                Cell::Text(Cow::Borrowed(options[rng.random_range(0..options.len())]))
            }
            Gen::Money(scale, max, null_pct) => maybe(rng, null_pct, |r| money(r, scale, max)),
            Gen::Dt(null_pct, zero_pct) => {
                if pct(rng, zero_pct) {
                    Cell::ZeroDt
                } else {
                    maybe(rng, null_pct, |r| Cell::Dt(datetime(r)))
                }
            }
            Gen::Date(null_pct) => maybe(rng, null_pct, |r| Cell::Date(datetime(r).date())),
            Gen::Words(lo, hi, null_pct) => maybe(rng, null_pct, |r| words(r, lo, hi)),
            Gen::Hex(len, null_pct) => maybe(rng, null_pct, |r| hex(r, len)),
            Gen::AccountNumber => Cell::Text(Cow::Owned(format!("KZ-{:08}", ctx.id))),
            Gen::Double(max) => Cell::Dbl((rng.random_range(0.0..max) * 100.0_f64).round() / 100.0),
            Gen::Product => Cell::Text(Cow::Owned(format!(
                "{} «{}»",
                PRODUCTS[rng.random_range(0..PRODUCTS.len())],
                WORDS[rng.random_range(0..WORDS.len())]
            ))),
            Gen::PropId => Cell::Int(ctx.slot as i64 + 1),
            Gen::PropName => Cell::Text(Cow::Borrowed(PROPS[ctx.slot % PROPS.len()].1)),
            Gen::PropCode => Cell::Text(Cow::Borrowed(PROPS[ctx.slot % PROPS.len()].0)),
            Gen::PropValue => prop_value(rng, ctx.slot, ctx.order_id),
            Gen::Null => Cell::Null,
        }
    }
}

fn pct(rng: &mut StdRng, percent: u32) -> bool {
    percent > 0 && rng.random_range(0..100) < percent
}

fn maybe(rng: &mut StdRng, null_pct: u32, f: impl FnOnce(&mut StdRng) -> Cell) -> Cell {
    if pct(rng, null_pct) {
        Cell::Null
    } else {
        f(rng)
    }
}

fn money(rng: &mut StdRng, scale: u32, max: i64) -> Cell {
    let units = rng.random_range(0..max.max(1));
    let frac = rng.random_range(0..10_i64.pow(scale));
    Cell::Dec(format!("{units}.{frac:0width$}", width = scale as usize))
}

fn datetime(rng: &mut StdRng) -> NaiveDateTime {
    let start = NaiveDate::from_ymd_opt(2023, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("valid date");
    start + chrono::Duration::seconds(rng.random_range(0..2 * 365 * 86_400))
}

fn words(rng: &mut StdRng, lo: usize, hi: usize) -> Cell {
    let n = rng.random_range(lo..=hi);
    let mut text = String::with_capacity(n * 12);
    for i in 0..n {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    Cell::Text(Cow::Owned(text))
}

fn hex(rng: &mut StdRng, len: usize) -> Cell {
    const DIGITS: &[u8] = b"0123456789abcdef";
    let text: String = (0..len)
        .map(|_| DIGITS[rng.random_range(0..16)] as char)
        .collect();
    Cell::Text(Cow::Owned(text))
}

fn prop_value(rng: &mut StdRng, slot: usize, order_id: i64) -> Cell {
    let text = match PROPS[slot % PROPS.len()].0 {
        "FIO" => format!(
            "{} {}",
            SURNAMES[rng.random_range(0..SURNAMES.len())],
            NAMES[rng.random_range(0..NAMES.len())]
        ),
        "EMAIL" => format!("client{order_id}@example.kz"),
        "PHONE" => format!(
            "+7 (7{:02}) {:03}-{:04}",
            rng.random_range(0..100),
            rng.random_range(0..1000),
            rng.random_range(0..10_000)
        ),
        "ZIP" => format!("{:06}", rng.random_range(10_000..100_000)),
        "CITY" => CITIES[rng.random_range(0..CITIES.len())].to_string(),
        "LOCATION" => format!("{:010}", rng.random_range(200..400)),
        "ADDRESS" => format!(
            "ул. {}, д. {}, кв. {}",
            SURNAMES[rng.random_range(0..SURNAMES.len())],
            rng.random_range(1..200),
            rng.random_range(1..300)
        ),
        _ => {
            let Cell::Text(t) = words(rng, 3, 12) else {
                unreachable!("words() returns text")
            };
            t.into_owned()
        }
    };
    Cell::Text(Cow::Owned(text))
}

const WORDS: &[&str] = &[
    "доставка",
    "букет",
    "роз",
    "пожалуйста",
    "позвоните",
    "заранее",
    "курьеру",
    "подъезд",
    "домофон",
    "не",
    "работает",
    "оставить",
    "у",
    "двери",
    "свежие",
    "цветы",
    "открытка",
    "поздравляю",
    "с",
    "днём",
    "рождения",
    "любимая",
    "мама",
    "спасибо",
    "за",
    "всё",
    "вечером",
    "после",
    "шести",
    "офис",
    "этаж",
    "тюльпаны",
    "пионы",
    "хризантемы",
    "упаковка",
    "крафт",
    "лента",
    "красная",
    "белая",
    "оплата",
    "Kaspi",
    "наличными",
    "сдача",
    "с",
    "десяти",
    "тысяч",
    "Алматы",
    "Астана",
    "срочно",
    "сюрприз",
];
const PRODUCTS: &[&str] = &[
    "Букет из 25 роз",
    "Букет из 51 розы",
    "Тюльпаны микс",
    "Пионы в коробке",
    "Корзина хризантем",
    "Монобукет",
    "Композиция в шляпной коробке",
];
const SURNAMES: &[&str] = &[
    "Иванова",
    "Ахметов",
    "Ким",
    "Сейткали",
    "Петрова",
    "Нурланов",
    "Абаева",
    "Смирнов",
];
const NAMES: &[&str] = &[
    "Айгерим",
    "Данияр",
    "Ольга",
    "Асель",
    "Максим",
    "Алия",
    "Ерлан",
];
const CITIES: &[&str] = &["Алматы", "Астана", "Шымкент", "Караганда", "Актобе"];
/// The eight order property slots: (CODE, NAME).
const PROPS: &[(&str, &str)] = &[
    ("FIO", "Ф.И.О."),
    ("EMAIL", "E-Mail"),
    ("PHONE", "Телефон"),
    ("ZIP", "Индекс"),
    ("CITY", "Город"),
    ("LOCATION", "Местоположение"),
    ("ADDRESS", "Адрес доставки"),
    ("postcardText", "Текст открытки"),
];
/// Order property rows per order in the steady-state phase.
pub const PROPS_PER_ORDER: usize = 8;
/// Basket rows per order in the steady-state phase.
pub const BASKETS_PER_ORDER: usize = 3;

const STATUSES: &[&str] = &["N", "P", "F"];
const DELIVERY_IDS: &[&str] = &["1", "2", "3", "5"];

use Gen::*;

/// `b_sale_order`, sale 23.200.0: all 76 columns.
pub const ORDER: Table = Table {
    name: "b_sale_order",
    columns: &[
        col("ID", "int NOT NULL AUTO_INCREMENT", Id),
        col("LID", "char(2) NOT NULL", Const("s1")),
        col("PERSON_TYPE_ID", "int NOT NULL", Int(1, 2, 0)),
        col("PAYED", "char(1) NOT NULL DEFAULT 'N'", Flag(60)),
        col("DATE_PAYED", "datetime NULL", Dt(40, 0)),
        col("EMP_PAYED_ID", "int NULL", Int(1, 40, 60)),
        col("CANCELED", "char(1) NOT NULL DEFAULT 'N'", Flag(5)),
        col("DATE_CANCELED", "datetime NULL", Dt(95, 0)),
        col("EMP_CANCELED_ID", "int NULL", Int(1, 40, 95)),
        col("REASON_CANCELED", "varchar(255) NULL", Words(2, 8, 95)),
        col("STATUS_ID", "varchar(2) NOT NULL", OneOf(STATUSES)),
        col("DATE_STATUS", "datetime NOT NULL", Dt(0, 1)),
        col("EMP_STATUS_ID", "int NULL", Int(1, 40, 30)),
        col(
            "PRICE_DELIVERY",
            "decimal(18,4) NOT NULL DEFAULT '0.0000'",
            Money(4, 5_000, 0),
        ),
        col(
            "PRICE_PAYMENT",
            "decimal(18,4) NOT NULL DEFAULT '0.0000'",
            Money(4, 1, 0),
        ),
        col("ALLOW_DELIVERY", "char(1) NOT NULL DEFAULT 'N'", Flag(50)),
        col("DATE_ALLOW_DELIVERY", "datetime NULL", Dt(50, 0)),
        col("EMP_ALLOW_DELIVERY_ID", "int NULL", Int(1, 40, 50)),
        col("DEDUCTED", "char(1) NOT NULL DEFAULT 'N'", Flag(40)),
        col("DATE_DEDUCTED", "datetime NULL", Dt(60, 0)),
        col("EMP_DEDUCTED_ID", "int NULL", Int(1, 40, 60)),
        col("REASON_UNDO_DEDUCTED", "varchar(255) NULL", Null),
        col("MARKED", "char(1) NOT NULL DEFAULT 'N'", Flag(2)),
        col("DATE_MARKED", "datetime NULL", Dt(98, 0)),
        col("EMP_MARKED_ID", "int NULL", Int(1, 40, 98)),
        col("REASON_MARKED", "varchar(255) NULL", Words(2, 6, 98)),
        col("RESERVED", "char(1) NOT NULL DEFAULT 'N'", Flag(30)),
        col("PRICE", "decimal(18, 4) NOT NULL", Money(4, 150_000, 0)),
        col("CURRENCY", "char(3) NOT NULL", Const("KZT")),
        col(
            "DISCOUNT_VALUE",
            "decimal(18,4) NOT NULL DEFAULT '0.0000'",
            Money(4, 3_000, 0),
        ),
        col("USER_ID", "int NOT NULL", Int(1, 200_000, 0)),
        col("PAY_SYSTEM_ID", "int NULL", Int(1, 10, 5)),
        col("DELIVERY_ID", "varchar(50) NULL", OneOf(DELIVERY_IDS)),
        col("DATE_INSERT", "datetime NOT NULL", Dt(0, 0)),
        col("DATE_UPDATE", "datetime NOT NULL", Dt(0, 0)),
        col("USER_DESCRIPTION", "varchar(2000) NULL", Words(3, 30, 30)),
        col("ADDITIONAL_INFO", "varchar(255) NULL", Null),
        col("PS_STATUS", "char(1) NULL", Flag(70)),
        col("PS_STATUS_CODE", "char(5) NULL", OneOf(&["200", "OK", "0"])),
        col(
            "PS_STATUS_DESCRIPTION",
            "varchar(250) NULL",
            Words(1, 5, 50),
        ),
        col("PS_STATUS_MESSAGE", "varchar(250) NULL", Words(1, 5, 70)),
        col("PS_SUM", "decimal(18,2) NULL", Money(2, 150_000, 40)),
        col("PS_CURRENCY", "char(3) NULL", Const("KZT")),
        col("PS_RESPONSE_DATE", "datetime NULL", Dt(40, 0)),
        col("COMMENTS", "text NULL", Words(2, 20, 50)),
        col(
            "TAX_VALUE",
            "decimal(18,2) NOT NULL DEFAULT '0.00'",
            Money(2, 10_000, 0),
        ),
        col("STAT_GID", "varchar(255) NULL", Null),
        col(
            "SUM_PAID",
            "decimal(18,2) NOT NULL DEFAULT '0'",
            Money(2, 150_000, 0),
        ),
        col("IS_RECURRING", "char(1) NOT NULL DEFAULT 'N'", Const("N")),
        col("RECURRING_ID", "int NULL", Null),
        col("PAY_VOUCHER_NUM", "varchar(20) NULL", Hex(10, 90)),
        col("PAY_VOUCHER_DATE", "date NULL", Date(90)),
        col("LOCKED_BY", "int NULL", Int(1, 40, 95)),
        col("DATE_LOCK", "datetime NULL", Dt(95, 0)),
        col("RECOUNT_FLAG", "char(1) NOT NULL DEFAULT 'Y'", Const("Y")),
        col("AFFILIATE_ID", "int NULL", Null),
        col("DELIVERY_DOC_NUM", "varchar(20) NULL", Hex(12, 80)),
        col("DELIVERY_DOC_DATE", "date NULL", Date(80)),
        col("UPDATED_1C", "CHAR(1) NOT NULL DEFAULT 'N'", Flag(10)),
        col("STORE_ID", "int NULL", Int(1, 30, 50)),
        col("ORDER_TOPIC", "varchar(255) NULL", Null),
        col("CREATED_BY", "int(11) NULL", Int(1, 200_000, 10)),
        col("RESPONSIBLE_ID", "int(11) NULL", Int(1, 40, 20)),
        col("COMPANY_ID", "int(11) NULL", Int(1, 3, 10)),
        col("DATE_PAY_BEFORE", "datetime NULL", Dt(70, 0)),
        col("DATE_BILL", "datetime NULL", Dt(70, 0)),
        col("ACCOUNT_NUMBER", "varchar(100) NULL", AccountNumber),
        col("TRACKING_NUMBER", "varchar(255) NULL", Hex(14, 80)),
        col("XML_ID", "varchar(255) NULL", Hex(32, 50)),
        col("ID_1C", "varchar(36) NULL", Hex(36, 80)),
        col("VERSION_1C", "varchar(15) NULL", Null),
        col("VERSION", "INT(11) NOT NULL DEFAULT '0'", Int(1, 20, 0)),
        col("EXTERNAL_ORDER", "char(1) NOT NULL DEFAULT 'N'", Const("N")),
        col("RUNNING", "char(1) NOT NULL DEFAULT 'N'", Const("N")),
        col("BX_USER_ID", "varchar(32) NULL", Hex(32, 20)),
        col("SEARCH_CONTENT", "mediumtext NULL", Words(5, 25, 0)),
        col("IS_SYNC_B24", "CHAR(1) NOT NULL DEFAULT 'N'", Const("N")),
    ],
};

/// `b_sale_basket`, sale 23.200.0: all 49 columns.
pub const BASKET: Table = Table {
    name: "b_sale_basket",
    columns: &[
        col("ID", "int NOT NULL AUTO_INCREMENT", Id),
        col("FUSER_ID", "int NOT NULL", Int(1, 500_000, 0)),
        col("ORDER_ID", "int NULL", OrderId),
        col("PRODUCT_ID", "int NOT NULL", Int(1_000, 90_000, 0)),
        col("PRODUCT_PRICE_ID", "int NULL", Int(1, 90_000, 10)),
        col("PRICE_TYPE_ID", "int NULL", Int(1, 2, 10)),
        col("PRICE", "decimal(18, 4) NOT NULL", Money(4, 60_000, 0)),
        col("CURRENCY", "char(3) NOT NULL", Const("KZT")),
        col("BASE_PRICE", "decimal(18, 4) NULL", Money(4, 60_000, 10)),
        col("VAT_INCLUDED", "char(1) NOT NULL DEFAULT 'Y'", Const("Y")),
        col("DATE_INSERT", "datetime NOT NULL", Dt(0, 0)),
        col("DATE_UPDATE", "datetime NOT NULL", Dt(0, 0)),
        col("DATE_REFRESH", "datetime NULL", Dt(50, 0)),
        col("WEIGHT", "double(18, 2) NULL", Double(5_000.0)),
        col(
            "QUANTITY",
            "double(18, 4) NOT NULL DEFAULT '0'",
            Double(10.0),
        ),
        col("LID", "char(2) NOT NULL", Const("s1")),
        col("DELAY", "char(1) NOT NULL DEFAULT 'N'", Const("N")),
        col("NAME", "varchar(255) NOT NULL", Product),
        col("CAN_BUY", "char(1) NOT NULL DEFAULT 'Y'", Const("Y")),
        col("MARKING_CODE_GROUP", "varchar(100) NULL", Null),
        col("MODULE", "varchar(100) NULL", Const("catalog")),
        col("CALLBACK_FUNC", "varchar(100) NULL", Null),
        col("NOTES", "varchar(250) NULL", Words(1, 3, 70)),
        col("ORDER_CALLBACK_FUNC", "varchar(100) NULL", Null),
        col("DETAIL_PAGE_URL", "varchar(250) NULL", Hex(20, 10)),
        col(
            "DISCOUNT_PRICE",
            "decimal(18,4) NOT NULL",
            Money(4, 2_000, 0),
        ),
        col("CANCEL_CALLBACK_FUNC", "varchar(100) NULL", Null),
        col("PAY_CALLBACK_FUNC", "varchar(100) NULL", Null),
        col(
            "PRODUCT_PROVIDER_CLASS",
            "varchar(100) NULL",
            Const("\\Bitrix\\Catalog\\Product\\CatalogProvider"),
        ),
        col("CATALOG_XML_ID", "varchar(100) NULL", Hex(32, 20)),
        col("PRODUCT_XML_ID", "varchar(100) NULL", Hex(32, 20)),
        col("DISCOUNT_NAME", "varchar(255) NULL", Words(1, 4, 80)),
        col(
            "DISCOUNT_VALUE",
            "char(32) NULL",
            OneOf(&["5%", "10%", "15%"]),
        ),
        col("DISCOUNT_COUPON", "char(32) NULL", Hex(12, 90)),
        col(
            "VAT_RATE",
            "DECIMAL(18, 4) NULL DEFAULT '0.00'",
            Money(4, 1, 0),
        ),
        col("SUBSCRIBE", "char(1) NOT NULL DEFAULT 'N'", Const("N")),
        col("DEDUCTED", "char(1) NOT NULL DEFAULT 'N'", Flag(40)),
        col("RESERVED", "char(1) NOT NULL DEFAULT 'N'", Flag(30)),
        col("BARCODE_MULTI", "char(1) NOT NULL DEFAULT 'N'", Const("N")),
        col("RESERVE_QUANTITY", "double NULL", Double(10.0)),
        col("CUSTOM_PRICE", "char(1) NOT NULL DEFAULT 'N'", Flag(5)),
        col(
            "DIMENSIONS",
            "varchar(255) NULL",
            Const("a:3:{s:5:\"WIDTH\";N;s:6:\"HEIGHT\";N;s:6:\"LENGTH\";N;}"),
        ),
        col("TYPE", "int(11) NULL", Null),
        col("SET_PARENT_ID", "int(11) NULL", Null),
        col("MEASURE_CODE", "INT(11) NULL", Int(796, 796, 0)),
        col("MEASURE_NAME", "varchar(50) NULL", Const("шт")),
        col("RECOMMENDATION", "varchar(40) NULL", Null),
        col("XML_ID", "varchar(255) NULL", Hex(32, 0)),
        col("SORT", "INT(11) NOT NULL DEFAULT '100'", Int(100, 100, 0)),
    ],
};

/// `b_sale_order_props_value`, sale 23.200.0: all 9 columns.
pub const PROPS_VALUE: Table = Table {
    name: "b_sale_order_props_value",
    columns: &[
        col("ID", "int NOT NULL AUTO_INCREMENT", Id),
        col("ORDER_ID", "int NOT NULL", OrderId),
        col("ORDER_PROPS_ID", "int NULL", PropId),
        col("NAME", "varchar(255) NOT NULL", PropName),
        col("VALUE", "varchar(500) NULL", PropValue),
        col("CODE", "varchar(50) NULL", PropCode),
        col("XML_ID", "varchar(255) NULL", Hex(32, 50)),
        col("ENTITY_ID", "int NOT NULL", OrderId),
        col("ENTITY_TYPE", "varchar(255) NOT NULL", Const("ORDER")),
    ],
};
