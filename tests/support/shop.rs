//! A generated cvety.kz-like Bitrix shop: reference data (statuses, locations), users, sellers,
//! products with prices and seller links, and orders with basket rows and properties, written
//! into the real Bitrix tables (`examples/shop/bitrix.sql`) the way Bitrix stores them:
//! `Y`/`N` flags, zero dates, local DATETIMEs, Cyrillic text, Kazakh phone numbers in every
//! format people type, delivery dates as typed strings (some unreadable), carts without orders.
//!
//! Shared by the mapping tests and the demo (`examples/demo.rs`). Deterministic for a seed.

#![allow(dead_code)]

use mysql_async::prelude::Queryable;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;

pub const BITRIX_DDL: &str = include_str!("../../examples/shop/bitrix.sql");
pub const CRM_DDL: &str = include_str!("../../mappings/bitrix/crm.sql");

/// The shipped mapping set (`mappings/bitrix/*.toml`) as (file name, text), read at run time so
/// that what is tested is what users get.
pub fn mapping_files() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/bitrix");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    files.sort();
    files
}

/// A shop's databases with the Bitrix tables and the CRM schema, and a work dir for duplex
/// with the shipped mapping set, each file's text passed through `edit(name, text)` first.
pub async fn shop_dbs(
    prefix: &str,
    edit: impl Fn(&str, String) -> String,
) -> (super::TestDbs, super::harness::Workdir) {
    let dbs = super::fresh_dbs(prefix).await;
    let mut my = dbs.mysql().await;
    create_bitrix(&mut my).await;
    let pg = dbs.pg().await;
    pg.batch_execute(CRM_DDL).await.unwrap();
    let files: Vec<(String, String)> = mapping_files()
        .into_iter()
        .map(|(name, text)| {
            let text = edit(&name, text);
            (name, text)
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let pipeline = super::harness::pipeline_name(prefix, &dbs);
    let work = super::harness::Workdir::new(&dbs, &pipeline, "Asia/Almaty", &refs);
    (dbs, work)
}

/// The shop's status codes with their type and names (ru, en).
pub const STATUSES: &[(&str, &str, &str, &str)] = &[
    ("N", "O", "Принят, ожидается оплата", "Accepted"),
    ("AP", "O", "Подтверждён", "Confirmed"),
    (
        "P",
        "O",
        "Оплачен, формируется к отправке",
        "Paid, preparing",
    ),
    ("PD", "O", "Оплачен", "Paid"),
    ("CO", "O", "Собран", "Assembled"),
    ("DE", "O", "В пути", "In transit"),
    ("F", "O", "Выполнен", "Fulfilled"),
    ("UN", "O", "Нереализован", "Unrealized"),
    ("CA", "O", "Решить", "Decide"),
    ("DN", "D", "Ожидает обработки", "Awaiting processing"),
    ("DF", "D", "Отгружен", "Shipped"),
];

/// Order status codes orders get (type O).
const ORDER_CODES: &[&str] = &["N", "AP", "P", "PD", "CO", "DE", "F", "F", "F", "UN", "CA"];

/// A location: (ID, CODE, TYPE_ID, PARENT_ID, ru, en), codes as the Kazakhstan location bundle
/// has them.
pub type Location = (
    i64,
    &'static str,
    i64,
    Option<i64>,
    &'static str,
    &'static str,
);

pub const LOCATIONS: &[Location] = &[
    (276, "0000000276", 1, None, "Казахстан", "Kazakhstan"),
    (278, "0000000278", 3, Some(276), "Алматы", "Almaty"),
    (363, "0000000363", 3, Some(276), "Астана", "Astana"),
    (324, "0000000324", 3, Some(276), "Костанай", "Kostanay"),
    (
        293,
        "0000000293",
        3,
        Some(276),
        "Усть-Каменогорск",
        "Ust-Kamenogorsk",
    ),
];

/// The site's own city numbers the order form sends in the property `city`, as indexes into
/// [`LOCATIONS`]: 1 and 2 are in the shipped map site_city, 3 and 4 are not (their orders keep
/// the number and get no city_id).
pub const SITE_CITIES: &[(i64, usize)] = &[(1, 1), (2, 2), (3, 3), (4, 4)];

/// The shipped map site_city (`mappings/bitrix/maps.toml`): location CODE → the site's number.
pub fn site_city_map() -> BTreeMap<String, i64> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/bitrix/maps.toml"),
    )
    .expect("mappings/bitrix/maps.toml");
    let v: toml::Value = toml::from_str(&text).expect("maps.toml parses");
    v["map"]["site_city"]["values"]
        .as_table()
        .expect("map.site_city.values")
        .iter()
        .map(|(code, n)| (code.clone(), n.as_integer().expect("a number")))
        .collect()
}

const FIRST: &[&str] = &[
    "Айгерим",
    "Алия",
    "Дана",
    "Асель",
    "Мадина",
    "Жанна",
    "Ольга",
    "Наталья",
    "Ерлан",
    "Нурлан",
    "Данияр",
    "Арман",
    "Сергей",
    "Александр",
    "Тимур",
    "Айдана",
    "Гульнара",
];
const LAST: &[&str] = &[
    "Серикова",
    "Ахметова",
    "Иванова",
    "Нурланова",
    "Ким",
    "Смагулов",
    "Петров",
    "Жумабаев",
    "Касымова",
    "Омарова",
    "Ли",
    "Бекова",
];
const STREETS: &[&str] = &[
    "пр. Абая",
    "ул. Достык",
    "пр. Аль-Фараби",
    "ул. Кенесары",
    "пр. Мангилик Ел",
    "ул. Сатпаева",
    "ул. Жибек Жолы",
    "мкр. Самал-2",
];
const FLOWERS: &[&str] = &[
    "Букет из 25 роз",
    "Пионы микс",
    "Тюльпаны 51 шт",
    "Хризантемы в коробке",
    "Композиция «Нежность»",
    "Лилии белые",
    "Розы кустовые",
    "Гортензия",
];
const WISHES: &[&str] = &[
    "С днём рождения! 🌷",
    "Люблю тебя",
    "Поздравляю с 8 Марта!",
    "Спасибо за всё",
    "Туған күніңмен!",
];

/// What was generated, for the test's oracle and for later writes.
#[derive(Debug, Clone, Default)]
pub struct Shop {
    pub users: Vec<i64>,
    pub sellers: Vec<i64>,
    pub products: Vec<i64>,
    pub orders: Vec<i64>,
    pub next_order: i64,
    pub next_basket: i64,
    pub next_prop: i64,
}

/// A SQL string literal (MariaDB, default sql_mode).
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn opt(s: Option<String>) -> String {
    s.map_or("NULL".into(), |s| lit(&s))
}

/// A local DATETIME in 2025–2026 (after Kazakhstan's move to UTC+5).
fn when(rng: &mut StdRng) -> String {
    let day = rng.random_range(0..600);
    let d = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + chrono::Days::new(day);
    format!(
        "{} {:02}:{:02}:{:02}",
        d.format("%Y-%m-%d"),
        rng.random_range(0..24),
        rng.random_range(0..60),
        rng.random_range(0..60)
    )
}

/// A Kazakh mobile number as people type it.
pub fn phone(rng: &mut StdRng) -> String {
    let op = ["701", "702", "705", "707", "747", "771", "777", "778"][rng.random_range(0..8)];
    let n = rng.random_range(1_000_000..10_000_000u32).to_string();
    match rng.random_range(0..6) {
        0 => format!("8 ({op}) {}-{}-{}", &n[..3], &n[3..5], &n[5..]),
        1 => format!("+7 {op} {n}"),
        2 => format!("8{op}{n}"),
        3 => format!("+7({op}){}-{}-{}", &n[..3], &n[3..5], &n[5..]),
        4 => format!("{op}{n}"),
        _ => format!("7{op}{n}"),
    }
}

fn person(rng: &mut StdRng) -> String {
    format!(
        "{} {}",
        FIRST[rng.random_range(0..FIRST.len())],
        LAST[rng.random_range(0..LAST.len())]
    )
}

fn address(rng: &mut StdRng) -> String {
    format!(
        "{}, д. {}, кв. {}",
        STREETS[rng.random_range(0..STREETS.len())],
        rng.random_range(1..200),
        rng.random_range(1..150)
    )
}

/// Creates the Bitrix tables in the connection's database.
pub async fn create_bitrix(my: &mut mysql_async::Conn) {
    my.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    my.query_drop(BITRIX_DDL)
        .await
        .unwrap_or_else(|e| panic!("loading examples/shop/bitrix.sql: {e}"));
}

pub async fn insert(my: &mut mysql_async::Conn, table: &str, cols: &str, rows: &[String]) {
    for chunk in rows.chunks(500) {
        let sql = format!("INSERT INTO {table} ({cols}) VALUES {}", chunk.join(","));
        my.query_drop(&sql)
            .await
            .unwrap_or_else(|e| panic!("inserting into {table}: {e}"));
    }
}

/// Fills reference data, users and the catalog, then `orders` orders (ids from 1) with their
/// basket rows and properties.
pub async fn generate(my: &mut mysql_async::Conn, seed: u64, users: usize, orders: usize) -> Shop {
    let mut rng = StdRng::seed_from_u64(seed);
    my.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    let mut shop = Shop::default();

    let rows: Vec<String> = STATUSES
        .iter()
        .enumerate()
        .map(|(i, (id, ty, _, _))| {
            format!(
                "({}, {}, {}, 'Y', {})",
                lit(id),
                lit(ty),
                100 + i * 10,
                lit(["#FF0000", "#00AA00", "#0000FF"][i % 3])
            )
        })
        .collect();
    insert(my, "b_sale_status", "ID, TYPE, SORT, NOTIFY, COLOR", &rows).await;
    let rows: Vec<String> = STATUSES
        .iter()
        .flat_map(|(id, _, ru, en)| {
            [
                format!("({}, 'ru', {}, NULL)", lit(id), lit(ru)),
                format!("({}, 'en', {}, NULL)", lit(id), lit(en)),
            ]
        })
        .collect();
    insert(
        my,
        "b_sale_status_lang",
        "STATUS_ID, LID, NAME, DESCRIPTION",
        &rows,
    )
    .await;

    let rows: Vec<String> = LOCATIONS
        .iter()
        .enumerate()
        .map(|(i, (id, code, ty, parent, _, _))| {
            format!(
                "({id}, {}, {}, {}, {}, {}, {ty}, {})",
                100 * (i + 1),
                lit(code),
                2 * i + 1,
                2 * i + 2,
                parent.map_or("NULL".into(), |p| p.to_string()),
                if *ty == 1 { 0 } else { 2 }
            )
        })
        .collect();
    insert(
        my,
        "b_sale_location",
        "ID, SORT, CODE, LEFT_MARGIN, RIGHT_MARGIN, PARENT_ID, TYPE_ID, DEPTH_LEVEL",
        &rows,
    )
    .await;
    let rows: Vec<String> = LOCATIONS
        .iter()
        .flat_map(|(id, _, _, _, ru, en)| {
            [
                format!("('ru', {id}, {}, {})", lit(ru), lit(&ru.to_uppercase())),
                format!("('en', {id}, {}, {})", lit(en), lit(&en.to_uppercase())),
            ]
        })
        .collect();
    insert(
        my,
        "b_sale_loc_name",
        "LANGUAGE_ID, LOCATION_ID, NAME, NAME_UPPER",
        &rows,
    )
    .await;

    // Users: id 1 is the administrator; buyers after it.
    let mut rows = Vec::new();
    for id in 1..=users as i64 {
        let name = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        let email = match rng.random_range(0..10) {
            0 => "noemail@cvety.kz".to_string(),
            1 => String::new(),
            _ => format!("user{id}@mail.kz"),
        };
        let phone = match rng.random_range(0..12) {
            0 => "нет".to_string(),
            1 => String::new(),
            _ => phone(&mut rng),
        };
        let last_login = if rng.random_bool(0.2) {
            "'0000-00-00 00:00:00'".to_string()
        } else {
            lit(&when(&mut rng))
        };
        rows.push(format!(
            "({id}, {}, 'x', {}, {}, {}, {}, {}, {}, {}, 's1', {}, {}, NULL)",
            lit(&format!("user{id}")),
            lit(if rng.random_bool(0.9) { "Y" } else { "N" }),
            lit(&format!(" {name} ")),
            lit(last),
            lit(&email),
            last_login,
            lit(&when(&mut rng)),
            lit(&phone),
            lit(if rng.random_bool(0.5) { "F" } else { "M" }),
            lit(["Алматы", "Астана", "Караганда"][rng.random_range(0..3)]),
        ));
        shop.users.push(id);
    }
    insert(my, "b_user", "ID, LOGIN, PASSWORD, ACTIVE, NAME, LAST_NAME, EMAIL, LAST_LOGIN, DATE_REGISTER, PERSONAL_PHONE, LID, PERSONAL_GENDER, PERSONAL_CITY, XML_ID", &rows).await;

    // Infoblock elements: shops (32), products (2), offers (27), workflow copies.
    let mut rows = Vec::new();
    let mut id = 17000;
    for i in 0..8 {
        id += 1;
        rows.push(format!(
            "({id}, 32, {}, {}, 'Y', {}, {}, {}, NULL, NULL)",
            lit(&format!(
                "Цветочный магазин «{}»",
                [
                    "Роза",
                    "Пион",
                    "Лилия",
                    "Ромашка",
                    "Орхидея",
                    "Астра",
                    "Тюльпан",
                    "CVETYKZ"
                ][i]
            )),
            lit(&format!("shop-{i}")),
            100 * (i + 1),
            lit(&when(&mut rng)),
            lit(&when(&mut rng)),
        ));
        shop.sellers.push(id);
    }
    let mut id = 1000;
    for i in 0..120 {
        id += 1;
        let text = if i % 7 == 0 {
            "   ".to_string()
        } else {
            format!("Свежие цветы, {} шт.", 5 + i % 50)
        };
        rows.push(format!(
            "({id}, 2, {}, {}, {}, {}, {}, {}, {}, NULL)",
            lit(&format!("{} №{i} ", FLOWERS[i % FLOWERS.len()])),
            lit(&format!("product-{i}")),
            lit(if i % 10 == 9 { "N" } else { "Y" }),
            500 + i,
            lit(&when(&mut rng)),
            lit(&when(&mut rng)),
            lit(&text),
        ));
        shop.products.push(id);
    }
    // Offers (another infoblock) and a workflow copy of product 1001: never products.
    for i in 0..5 {
        rows.push(format!(
            "({}, 27, {}, NULL, 'Y', 500, {}, {}, NULL, NULL)",
            5000 + i,
            lit(&format!("Размер {i}")),
            lit(&when(&mut rng)),
            lit(&when(&mut rng))
        ));
    }
    rows.push(format!(
        "(6000, 2, 'Черновик', NULL, 'Y', 500, {}, {}, NULL, 1001)",
        lit(&when(&mut rng)),
        lit(&when(&mut rng))
    ));
    insert(my, "b_iblock_element", "ID, IBLOCK_ID, NAME, CODE, ACTIVE, SORT, DATE_CREATE, TIMESTAMP_X, DETAIL_TEXT, WF_PARENT_ELEMENT_ID", &rows).await;

    let mut prices = Vec::new();
    let mut links = Vec::new();
    for (i, p) in shop.products.iter().enumerate() {
        let base = 5000 + (i as i64 * 1370) % 60000;
        prices.push(format!("({p}, 1, '{base}.00', 'KZT', NULL, NULL)"));
        prices.push(format!("({p}, 2, '{}.50', 'KZT', NULL, NULL)", base + 1000));
        if i % 5 == 0 {
            prices.push(format!("({p}, 1, '{}.00', 'KZT', 10, NULL)", base - 500));
        }
        if i % 11 != 3 {
            links.push(format!(
                "(290, {p}, '{}', 'text')",
                shop.sellers[i % shop.sellers.len()]
            ));
        }
        links.push(format!("(291, {p}, {}, 'text')", lit("красный")));
    }
    insert(
        my,
        "b_catalog_price",
        "PRODUCT_ID, CATALOG_GROUP_ID, PRICE, CURRENCY, QUANTITY_FROM, QUANTITY_TO",
        &prices,
    )
    .await;
    insert(
        my,
        "b_iblock_element_property",
        "IBLOCK_PROPERTY_ID, IBLOCK_ELEMENT_ID, VALUE, VALUE_TYPE",
        &links,
    )
    .await;

    shop.next_order = 1;
    shop.next_basket = 1;
    shop.next_prop = 1;
    let mut batch = OrderBatch::default();
    for _ in 0..orders {
        order_rows(&mut rng, &mut shop, &mut batch, None);
        if batch.orders.len() >= 500 {
            batch.write(my).await;
        }
    }
    batch.write(my).await;
    // Carts: basket rows without an order.
    let carts: Vec<String> = (0..40)
        .map(|i| {
            let id = shop.next_basket;
            shop.next_basket += 1;
            format!("({id}, {}, NULL, {}, 'KZT', '9000.0000', '9000.0000', '0.0000', 1, 'Y', {}, {}, {}, 's1')", 100 + i, shop.products[i % shop.products.len()], lit("Корзина"), lit(&when(&mut rng)), lit(&when(&mut rng)))
        })
        .collect();
    insert(my, "b_sale_basket", BASKET_COLS, &carts).await;
    shop
}

pub const ORDER_COLS: &str = "ID, LID, PERSON_TYPE_ID, PAYED, CANCELED, DATE_CANCELED, REASON_CANCELED, STATUS_ID, DATE_STATUS, PRICE_DELIVERY, PRICE, CURRENCY, DISCOUNT_VALUE, USER_ID, PAY_SYSTEM_ID, DELIVERY_ID, DATE_INSERT, DATE_UPDATE, USER_DESCRIPTION, COMMENTS, ACCOUNT_NUMBER, XML_ID, RESPONSIBLE_ID, ALLOW_DELIVERY, DEDUCTED";
pub const BASKET_COLS: &str = "ID, FUSER_ID, ORDER_ID, PRODUCT_ID, CURRENCY, PRICE, BASE_PRICE, DISCOUNT_PRICE, QUANTITY, DELAY, NAME, DATE_INSERT, DATE_UPDATE, LID";
pub const PROP_COLS: &str =
    "ID, ORDER_ID, ORDER_PROPS_ID, NAME, VALUE, CODE, ENTITY_ID, ENTITY_TYPE";

/// The shop's order property codes; `b_sale_order_props.ID` is the position + 1.
pub const PROP_CODES: &[&str] = &[
    "FIO",
    "nameRecipient",
    "phoneRecipient",
    "PHONE",
    "EMAIL",
    "iWillGet",
    "addressRecipient",
    "data",
    "when",
    "postcardText",
    "city",
    "CITY",
    "shopId",
    "SOURCE_ORDER",
];

/// `b_sale_order_props.ID` of a code.
pub fn prop_id(code: &str) -> usize {
    PROP_CODES
        .iter()
        .position(|c| *c == code)
        .expect("a known property code")
        + 1
}

/// Rows of orders not yet written.
#[derive(Debug, Default)]
pub struct OrderBatch {
    pub orders: Vec<String>,
    pub baskets: Vec<String>,
    pub props: Vec<String>,
}

impl OrderBatch {
    /// Writes the rows (order, then basket, then properties) and empties the batch.
    pub async fn write(&mut self, my: &mut mysql_async::Conn) {
        insert(
            my,
            "b_sale_order",
            ORDER_COLS,
            &std::mem::take(&mut self.orders),
        )
        .await;
        insert(
            my,
            "b_sale_basket",
            BASKET_COLS,
            &std::mem::take(&mut self.baskets),
        )
        .await;
        insert(
            my,
            "b_sale_order_props_value",
            PROP_COLS,
            &std::mem::take(&mut self.props),
        )
        .await;
    }
}

/// One order with its basket rows and properties, added to `batch`. `status` overrides the
/// generated status code.
pub fn order_rows(
    rng: &mut StdRng,
    shop: &mut Shop,
    batch: &mut OrderBatch,
    status: Option<&str>,
) -> i64 {
    let id = shop.next_order;
    shop.next_order += 1;
    shop.orders.push(id);
    let status = status.unwrap_or(ORDER_CODES[rng.random_range(0..ORDER_CODES.len())]);
    let canceled = status == "UN" || rng.random_bool(0.05);
    let inserted = when(rng);
    let date_status = if rng.random_bool(0.1) {
        "'0000-00-00 00:00:00'".to_string()
    } else {
        lit(&when(rng))
    };
    let (date_canceled, reason) = if canceled {
        (
            lit(&when(rng)),
            lit(["Клиент отказался", "  ", "Нет в наличии"][rng.random_range(0..3)]),
        )
    } else {
        ("'0000-00-00 00:00:00'".to_string(), "NULL".to_string())
    };
    let user = shop.users[rng.random_range(1..shop.users.len())];
    let items = rng.random_range(1..=4);
    let mut total = 0i64;
    for _ in 0..items {
        let b = shop.next_basket;
        shop.next_basket += 1;
        let p = shop.products[rng.random_range(0..shop.products.len())];
        let price = rng.random_range(50..600) * 100;
        let discount = if rng.random_bool(0.2) { 500 } else { 0 };
        let qty = [1.0, 1.0, 2.0, 3.0, 1.5][rng.random_range(0..5)];
        total += ((price - discount) as f64 * qty) as i64;
        batch.baskets.push(format!(
            "({b}, {}, {id}, {p}, 'KZT', '{}.0000', '{price}.0000', '{discount}.0000', {qty}, 'N', {}, {}, {}, 's1')",
            1000 + user,
            price - discount,
            lit(&format!(" {} ", FLOWERS[rng.random_range(0..FLOWERS.len())])),
            lit(&inserted),
            lit(&inserted)
        ));
    }
    let delivery = [0, 1500, 2000, 3000][rng.random_range(0..4)];
    let comment = match rng.random_range(0..4) {
        0 => "NULL".to_string(),
        1 => lit("   "),
        _ => lit(&format!("  Позвонить за час, {}  ", person(rng))),
    };
    batch.orders.push(format!(
        "({id}, 's1', {}, {}, {}, {date_canceled}, {reason}, {}, {date_status}, '{delivery}.0000', '{}.0000', 'KZT', '{}.0000', {user}, {}, {}, {}, {}, {comment}, {}, {}, {}, {}, {}, {})",
        rng.random_range(1..=2),
        lit(if rng.random_bool(0.6) { "Y" } else { "N" }),
        lit(if canceled { "Y" } else { "N" }),
        lit(status),
        total + delivery,
        if rng.random_bool(0.1) { 500 } else { 0 },
        [1, 2, 3, 4, 10, 7][rng.random_range(0..6)],
        lit(&format!("{}", rng.random_range(1..5))),
        lit(&inserted),
        lit(&when(rng)),
        opt(if rng.random_bool(0.3) { Some("Курьер: домофон не работает".into()) } else { None }),
        lit(&format!("2025-{id}")),
        opt(if rng.random_bool(0.5) { Some(format!("xml-{id}")) } else { None }),
        if rng.random_bool(0.5) { rng.random_range(2..20).to_string() } else { "NULL".into() },
        lit(if rng.random_bool(0.5) { "Y" } else { "N" }),
        lit("N"),
    ));
    let mut prop = |code: &str, name: &str, value: String| {
        let pid = shop.next_prop;
        shop.next_prop += 1;
        batch.props.push(format!(
            "({pid}, {id}, {}, {}, {}, {}, {id}, 'ORDER')",
            prop_id(code),
            lit(name),
            lit(&value),
            lit(code)
        ));
    };
    let recipient = person(rng);
    match rng.random_range(0..4) {
        0 => prop("FIO", "Ф.И.О.", recipient.clone()),
        1 => {
            prop("nameRecipient", "Имя получателя", "  ".into());
            prop("FIO", "Ф.И.О.", recipient.clone());
        }
        _ => {
            prop("nameRecipient", "Имя получателя", recipient.clone());
            prop("FIO", "Ф.И.О.", person(rng));
        }
    }
    prop(
        "phoneRecipient",
        "Телефон получателя",
        if rng.random_bool(0.05) {
            "уточнить".into()
        } else {
            phone(rng)
        },
    );
    if rng.random_bool(0.5) {
        prop("PHONE", "Телефон", phone(rng));
    }
    if rng.random_bool(0.4) {
        prop("EMAIL", "E-Mail", format!("buyer{id}@mail.kz"));
    }
    let pickup = rng.random_bool(0.1);
    if pickup {
        prop("iWillGet", "Самовывоз", "Y".into());
    } else {
        prop("addressRecipient", "Адрес получателя", address(rng));
    }
    let day = chrono::NaiveDate::from_ymd_opt(2025, 6, 1).unwrap()
        + chrono::Days::new(rng.random_range(0..400));
    let date = match rng.random_range(0..10) {
        0 => day.format("%Y-%m-%d").to_string(),
        1 => "завтра после обеда".to_string(),
        2 => day.format("%d.%m.%y").to_string(),
        _ => day.format("%d.%m.%Y").to_string(),
    };
    prop("data", "Дата доставки", date);
    prop(
        "when",
        "Время доставки",
        [0, 1, 2, 3, 4, 5, 18][rng.random_range(0..7)].to_string(),
    );
    if rng.random_bool(0.6) {
        prop(
            "postcardText",
            "Текст открытки",
            WISHES[rng.random_range(0..WISHES.len())].to_string(),
        );
    }
    let (number, at) = SITE_CITIES[rng.random_range(0..SITE_CITIES.len())];
    prop("city", "Город", number.to_string());
    prop("CITY", "Город", LOCATIONS[at].4.to_string());
    prop(
        "shopId",
        "Магазин",
        shop.sellers[rng.random_range(0..shop.sellers.len())].to_string(),
    );
    prop("SOURCE_ORDER", "Источник", "site".into());
    id
}
