//! The cvety.kz mapping set (`mappings/bitrix/`) on a generated Bitrix shop, against real
//! MariaDB and PostgreSQL.
//!
//! The oracle here computes every CRM row from the Bitrix rows on its own (its own status map,
//! phone rules, date formats, time-zone arithmetic), so a wrong mapping file and a wrong mapping
//! engine both show up as differing fields.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use rand::SeedableRng;
use support::harness::{mysql_rows, pg_count, pg_rows, stop_cleanly, wait_for, Workdir};
use support::shop;

type Row = Vec<Option<String>>;

/// A shop's databases and a work dir with the shipped mappings as they are.
async fn shop_dbs(prefix: &str) -> (support::TestDbs, Workdir) {
    shop::shop_dbs(prefix, |_, text| text).await
}

// ---------------------------------------------------------------------------------------------
// The oracle.

/// Kazakhstan has been UTC+5 since 2024-03-01; the generated dates are all later.
fn utc_of_local(local: &str) -> Option<String> {
    if local.starts_with("0000-00-00") {
        return None;
    }
    let t = chrono::NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S").ok()?;
    Some(
        (t - chrono::Duration::hours(5))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
    )
}

fn clean(s: &Option<String>) -> Option<String> {
    s.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn yes_no(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|s| (s == "Y").to_string())
}

/// The oracle's phone rule: 10 digits get a leading 7, 11 digits starting with 8 get 7
/// instead; 11–15 digits stay; `+` in front. Anything else is kept as typed.
fn phone_of(raw: &str) -> String {
    let d: String = raw.chars().filter(char::is_ascii_digit).collect();
    if d.len() == 10 {
        format!("+7{d}")
    } else if d.len() == 11 && d.starts_with('8') {
        format!("+7{}", &d[1..])
    } else if (11..=15).contains(&d.len()) {
        format!("+{d}")
    } else {
        raw.to_string()
    }
}

fn status_of(code: &str) -> Option<&'static str> {
    Some(match code {
        "N" => "new",
        "AP" => "confirmed",
        "P" | "PD" => "paid",
        "CO" => "assembled",
        "RD" => "ready_delivery",
        "RP" => "ready_pickup",
        "DE" => "in_transit",
        "DF" => "shipped",
        "F" => "completed",
        "UN" => "unrealized",
        "RF" => "refunded",
        "CF" => "unpaid",
        "ER" => "payment_error",
        "TR" => "problematic",
        "RO" => "reassemble",
        "DN" => "waiting_processing",
        "WA" => "waiting_approval",
        "CA" => "decide",
        _ => return None,
    })
}

/// A typed delivery date: dd.mm.yyyy, yyyy-mm-dd or dd.mm.yy.
fn date_of(raw: &str) -> Option<String> {
    let t = raw.trim();
    let parts: Vec<&str> = t.split(['.', '-']).collect();
    if parts.len() != 3
        || !parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let (y, m, d) = if t.contains('-') {
        (parts[0].parse::<i32>().ok()?, parts[1], parts[2])
    } else {
        let y = parts[2].parse::<i32>().ok()?;
        (
            if parts[2].len() == 2 { 2000 + y } else { y },
            parts[1],
            parts[0],
        )
    };
    let date = chrono::NaiveDate::from_ymd_opt(y, m.parse().ok()?, d.parse().ok()?)?;
    Some(date.format("%Y-%m-%d").to_string())
}

fn time_slot(raw: &str) -> String {
    match raw {
        "0" => "as soon as possible",
        "1" => "08:00-12:00",
        "2" => "12:00-16:00",
        "3" => "16:00-20:00",
        "4" => "20:00-24:00",
        "5" => "by 10:00",
        other => other,
    }
    .to_string()
}

fn json_num(s: &Option<String>) -> serde_json::Value {
    s.as_ref().map_or(serde_json::Value::Null, |s| {
        serde_json::Value::from(s.parse::<i64>().unwrap())
    })
}

fn json_str(s: &Option<String>) -> serde_json::Value {
    s.as_ref().map_or(serde_json::Value::Null, |s| {
        serde_json::Value::from(s.clone())
    })
}

/// Expected CRM rows per table, keyed by the Bitrix id, each row in the column order of the
/// matching `actual` query.
struct Expected {
    tables: BTreeMap<&'static str, BTreeMap<String, Row>>,
    /// Bitrix orders whose status the map does not know (dead letters, not CRM rows).
    unknown_status: Vec<String>,
}

/// Rows of a reference table keyed by their first column: the columns `sql` selects, then
/// `extra` of the key, then the names in ru and en from `names_sql` (key, language, name).
async fn with_names(
    my: &mut mysql_async::Conn,
    sql: &str,
    names_sql: &str,
    extra: impl Fn(&str) -> Vec<Option<String>>,
) -> BTreeMap<String, Row> {
    let names = mysql_rows(my, names_sql).await;
    let mut out = BTreeMap::new();
    for mut r in mysql_rows(my, sql).await {
        let id = r[0].clone().unwrap();
        let name = |lid: &str| {
            names
                .iter()
                .find(|n| n[0].as_deref() == Some(id.as_str()) && n[1].as_deref() == Some(lid))
                .and_then(|n| n[2].clone())
        };
        let (ru, en) = (name("ru"), name("en"));
        r.extend(extra(&id));
        r.extend([ru, en]);
        out.insert(id, r);
    }
    out
}

async fn expected(my: &mut mysql_async::Conn) -> Expected {
    let mut tables: BTreeMap<&'static str, BTreeMap<String, Row>> = BTreeMap::new();

    // Users.
    let mut users = BTreeMap::new();
    for r in mysql_rows(my, "SELECT ID, LOGIN, NAME, LAST_NAME, EMAIL, PERSONAL_PHONE, ACTIVE, DATE_REGISTER, LAST_LOGIN, LID, PERSONAL_GENDER, PERSONAL_CITY, XML_ID, EXTERNAL_AUTH_ID FROM b_user").await {
        let email = clean(&r[4]).filter(|e| e != "noemail@cvety.kz" && e != "no-email@cvety.kz");
        let phone = clean(&r[5]).map(|p| {
            let n = phone_of(&p);
            if n.starts_with('+') { n } else { r[5].clone().unwrap() }
        });
        let meta = serde_json::json!({
            "LID": json_str(&r[9]), "PERSONAL_GENDER": json_str(&r[10]), "PERSONAL_CITY": json_str(&r[11]),
            "XML_ID": json_str(&r[12]), "EXTERNAL_AUTH_ID": json_str(&r[13]),
        });
        users.insert(r[0].clone().unwrap(), vec![
            r[0].clone(), r[1].clone(), clean(&r[2]), clean(&r[3]), email, phone, yes_no(&r[6]),
            r[7].as_deref().and_then(utc_of_local), r[8].as_deref().and_then(utc_of_local), Some(meta.to_string()),
        ]);
    }
    tables.insert("users", users);

    // Sellers and products.
    let mut sellers = BTreeMap::new();
    let mut products = BTreeMap::new();
    let prices: BTreeMap<String, (Option<String>, Option<String>)> = mysql_rows(my, "SELECT PRODUCT_ID, PRICE, CURRENCY FROM b_catalog_price WHERE CATALOG_GROUP_ID = 1 AND QUANTITY_FROM IS NULL").await
        .into_iter().map(|r| (r[0].clone().unwrap(), (r[1].clone(), r[2].clone()))).collect();
    let links: BTreeMap<String, Option<String>> = mysql_rows(my, "SELECT IBLOCK_ELEMENT_ID, VALUE FROM b_iblock_element_property WHERE IBLOCK_PROPERTY_ID = 290").await
        .into_iter().map(|r| (r[0].clone().unwrap(), r[1].clone())).collect();
    for r in mysql_rows(my, "SELECT ID, IBLOCK_ID, NAME, CODE, DETAIL_TEXT, ACTIVE, SORT, DATE_CREATE, TIMESTAMP_X, WF_PARENT_ELEMENT_ID FROM b_iblock_element").await {
        if r[9].is_some() {
            continue;
        }
        let id = r[0].clone().unwrap();
        let common = |extra: Vec<Option<String>>| {
            let mut v = vec![r[0].clone(), r[2].as_ref().map(|s| s.trim().to_string()), r[3].clone()];
            v.extend(extra);
            v.extend([yes_no(&r[5]), r[6].clone(), r[7].as_deref().and_then(utc_of_local), r[8].as_deref().and_then(utc_of_local)]);
            v
        };
        match r[1].as_deref() {
            Some("32") => {
                sellers.insert(id, common(vec![]));
            }
            Some("2") => {
                let (price, cur) = prices.get(&id).cloned().unwrap_or((None, None));
                let seller = links.get(&id).cloned().flatten();
                products.insert(id.clone(), common(vec![clean(&r[4]), price, cur, seller.clone(), seller]));
            }
            _ => {}
        }
    }
    tables.insert("sellers", sellers);
    tables.insert("products", products);

    // Statuses and cities, each with its names per language.
    let statuses = with_names(
        my,
        "SELECT ID, TYPE, SORT, COLOR FROM b_sale_status",
        "SELECT STATUS_ID, LID, NAME FROM b_sale_status_lang",
        |id| vec![status_of(id).map(str::to_string)],
    )
    .await;
    tables.insert("order_statuses", statuses);
    // A location's site number comes from the map site_city, by its CODE.
    let site = shop::site_city_map();
    let codes: BTreeMap<String, String> = mysql_rows(my, "SELECT ID, CODE FROM b_sale_location")
        .await
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    let cities = with_names(
        my,
        "SELECT ID, CODE, TYPE_ID, PARENT_ID FROM b_sale_location",
        "SELECT LOCATION_ID, LANGUAGE_ID, NAME FROM b_sale_loc_name",
        |id| vec![site.get(&codes[id]).map(|n| n.to_string())],
    )
    .await;
    tables.insert("cities", cities);

    // Orders with their properties.
    let mut props: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in mysql_rows(
        my,
        "SELECT ORDER_ID, CODE, VALUE FROM b_sale_order_props_value",
    )
    .await
    {
        if let (Some(o), Some(c), Some(v)) = (&r[0], &r[1], &r[2]) {
            props
                .entry(o.clone())
                .or_default()
                .insert(c.clone(), v.clone());
        }
    }
    let mut orders = BTreeMap::new();
    let mut unknown_status = Vec::new();
    for r in mysql_rows(my, "SELECT ID, ACCOUNT_NUMBER, STATUS_ID, PRICE, PRICE_DELIVERY, DISCOUNT_VALUE, CURRENCY, PAYED, PAY_SYSTEM_ID, CANCELED, DATE_CANCELED, REASON_CANCELED, USER_ID, USER_DESCRIPTION, COMMENTS, DATE_INSERT, DATE_UPDATE, DATE_STATUS, LID, PERSON_TYPE_ID, DELIVERY_ID, XML_ID, RESPONSIBLE_ID, ALLOW_DELIVERY, DEDUCTED FROM b_sale_order").await {
        let id = r[0].clone().unwrap();
        let Some(status) = status_of(r[2].as_deref().unwrap_or("")) else {
            unknown_status.push(id);
            continue;
        };
        let p = props.get(&id).cloned().unwrap_or_default();
        let first = |codes: &[&str], f: &dyn Fn(&str) -> Option<String>| codes.iter().find_map(|c| p.get(*c).and_then(|v| f(v)));
        let trimmed = |v: &str| clean(&Some(v.to_string()));
        let phone = |v: &str| Some(phone_of(v));
        let method = match r[8].as_deref() {
            Some("1") => "cash",
            Some("2") => "card",
            Some("3") | Some("10") => "kaspi",
            Some("4") => "transfer",
            _ => "other",
        };
        let meta = serde_json::json!({
            "LID": json_str(&r[18]), "PERSON_TYPE_ID": json_num(&r[19]), "DELIVERY_ID": json_str(&r[20]),
            "XML_ID": json_str(&r[21]), "RESPONSIBLE_ID": json_num(&r[22]), "ALLOW_DELIVERY": json_str(&r[23]), "DEDUCTED": json_str(&r[24]),
        });
        let city = p.get("city").cloned();
        // The order's city row: the one whose site number the map gives (none for others).
        let mapped = city.clone().filter(|c| site.values().any(|n| n.to_string() == *c));
        let shop_id = p.get("shopId").cloned();
        orders.insert(id.clone(), vec![
            r[0].clone(), r[1].clone(), Some(status.to_string()), r[2].clone(), r[3].clone(), r[4].clone(), r[5].clone(), r[6].clone(),
            Some(if r[7].as_deref() == Some("Y") { "paid" } else { "pending" }.to_string()), Some(method.to_string()),
            yes_no(&r[9]), r[10].as_deref().and_then(utc_of_local), clean(&r[11]), r[12].clone(), r[12].clone(),
            clean(&r[13]), clean(&r[14]),
            r[15].as_deref().and_then(utc_of_local), r[16].as_deref().and_then(utc_of_local), r[17].as_deref().and_then(utc_of_local),
            Some("bitrix".into()), Some(meta.to_string()),
            first(&["nameRecipient", "FIO"], &trimmed),
            first(&["phoneRecipient", "PHONE"], &phone),
            first(&["EMAIL"], &trimmed),
            first(&["addressRecipient", "ADDRESS"], &trimmed),
            first(&["data", "DELIVERY_DATE"], &date_of),
            first(&["data", "DELIVERY_DATE"], &trimmed),
            first(&["when"], &|v| Some(time_slot(v))),
            first(&["postcardText", "POSTCARD_TEXT"], &trimmed),
            first(&["CITY"], &trimmed),
            first(&["iWillGet", "pickup"], &|v| Some((v == "Y").to_string())),
            city, mapped, shop_id.clone(), shop_id,
        ]);
    }
    tables.insert("orders", orders);

    // Basket rows of orders.
    let mut items = BTreeMap::new();
    for r in mysql_rows(my, "SELECT ID, ORDER_ID, PRODUCT_ID, NAME, PRICE, BASE_PRICE, DISCOUNT_PRICE, QUANTITY, CURRENCY, DATE_INSERT FROM b_sale_basket WHERE ORDER_ID IS NOT NULL").await {
        let qty = r[7].as_ref().map(|q| format!("{:.4}", q.parse::<f64>().unwrap()));
        // A look-up shows the parent's natural key when the parent row exists.
        let order = r[1].clone().filter(|o| tables["orders"].contains_key(o));
        let product = r[2].clone().filter(|p| tables["products"].contains_key(p));
        items.insert(r[0].clone().unwrap(), vec![
            r[0].clone(), r[1].clone(), order, r[2].clone(), product, r[3].as_ref().map(|s| s.trim().to_string()),
            r[4].clone(), r[5].clone(), r[6].clone(), qty, r[8].clone(), r[9].as_deref().and_then(utc_of_local),
        ]);
    }
    tables.insert("order_items", items);
    Expected {
        tables,
        unknown_status,
    }
}

fn ts(col: &str) -> String {
    format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')")
}

/// The CRM rows, in the oracle's column order; look-up columns are shown as the natural key of
/// the row they point to.
async fn actual(pg: &tokio_postgres::Client) -> BTreeMap<&'static str, BTreeMap<String, Row>> {
    let queries: Vec<(&'static str, String)> = vec![
        ("users", format!("SELECT bitrix_user_id::text, login, name, last_name, email, phone, is_active::text, {}, {}, metadata::text FROM users", ts("created_at"), ts("last_login_at"))),
        ("sellers", format!("SELECT bitrix_seller_id::text, name, slug, is_active::text, sort_order::text, {}, {} FROM sellers", ts("created_at"), ts("updated_at"))),
        ("products", format!("SELECT p.bitrix_product_id::text, p.name, p.slug, p.description, p.price::text, p.currency, p.bitrix_seller_id::text, s.bitrix_seller_id::text, p.is_active::text, p.sort_order::text, {}, {} FROM products p LEFT JOIN sellers s ON s.id = p.seller_id", ts("p.created_at"), ts("p.updated_at"))),
        ("order_statuses", "SELECT code, type, sort::text, color, crm_status, name_ru, name_en FROM order_statuses".into()),
        ("cities", "SELECT bitrix_location_id::text, bitrix_location_code, type_id::text, parent_id::text, bitrix_city_id::text, name_ru, name_en FROM cities".into()),
        ("orders", format!("SELECT o.bitrix_order_id::text, o.order_number, o.status, o.bitrix_status, o.total_amount::text, o.delivery_fee::text, o.discount_amount::text, o.currency, o.payment_status, o.payment_method, o.canceled::text, {}, o.cancel_reason, o.bitrix_user_id::text, u.bitrix_user_id::text, o.comment, o.courier_comment, {}, {}, {}, o.source, o.metadata::text, o.recipient_name, o.recipient_phone, o.recipient_email, o.delivery_address, o.delivery_date::text, o.delivery_date_raw, o.delivery_time, o.postcard_text, o.city_name, o.pickup::text, o.bitrix_city_id::text, c.bitrix_city_id::text, o.bitrix_shop_id::text, s.bitrix_seller_id::text FROM orders o LEFT JOIN users u ON u.id = o.user_id LEFT JOIN cities c ON c.id = o.city_id LEFT JOIN sellers s ON s.id = o.seller_id", ts("o.canceled_at"), ts("o.created_at"), ts("o.updated_at"), ts("o.status_changed_at"))),
        ("order_items", format!("SELECT i.bitrix_basket_id::text, i.bitrix_order_id::text, o.bitrix_order_id::text, i.bitrix_product_id::text, p.bitrix_product_id::text, i.name, i.price::text, i.base_price::text, i.discount_price::text, i.quantity::text, i.currency, {} FROM order_items i LEFT JOIN orders o ON o.id = i.order_id LEFT JOIN products p ON p.id = i.product_id", ts("i.created_at"))),
    ];
    let mut out = BTreeMap::new();
    for (table, sql) in queries {
        let rows = pg_rows(pg, &sql).await;
        out.insert(
            table,
            rows.into_iter()
                .map(|r| (r[0].clone().unwrap_or_default(), r))
                .collect(),
        );
    }
    out
}

/// Normalises jsonb text (key order) so both sides compare as JSON.
fn normalise(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| match serde_json::from_str::<serde_json::Value>(s) {
            Ok(j) if j.is_object() => j.to_string(),
            _ => s.clone(),
        })
}

/// Field-by-field differences, at most `limit` of them described.
fn differences(
    expected: &BTreeMap<&'static str, BTreeMap<String, Row>>,
    actual: &BTreeMap<&'static str, BTreeMap<String, Row>>,
    limit: usize,
) -> (usize, Vec<String>) {
    let mut count = 0;
    let mut shown = Vec::new();
    let mut note = |s: String| {
        count += 1;
        if shown.len() < limit {
            shown.push(s);
        }
    };
    for (table, rows) in expected {
        let got = &actual[table];
        for (key, want) in rows {
            match got.get(key) {
                None => note(format!("{table} {key}: missing")),
                Some(have) => {
                    for (i, (w, h)) in want.iter().zip(have).enumerate() {
                        if normalise(w) != normalise(h) {
                            note(format!(
                                "{table} {key} column {i}: expected {w:?}, found {h:?}"
                            ));
                        }
                    }
                }
            }
        }
        for key in got.keys().filter(|k| !rows.contains_key(*k)) {
            note(format!("{table} {key}: not expected"));
        }
    }
    (count, shown)
}

async fn wait_equal(
    pg: &tokio_postgres::Client,
    my: &mut mysql_async::Conn,
    work: &Workdir,
    within: Duration,
) -> Expected {
    let until = std::time::Instant::now() + within;
    loop {
        let want = expected(my).await;
        let have = actual(pg).await;
        let (n, shown) = differences(&want.tables, &have, 25);
        if n == 0 {
            return want;
        }
        if std::time::Instant::now() > until {
            let log = work.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "{n} CRM fields differ from what the mapping says, e.g.:\n{}\nduplex log tail:\n{}",
                shown.join("\n"),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_shop_is_replicated_field_by_field() {
    let (dbs, work) = shop_dbs("shop").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let mut shop = shop::generate(&mut my, 7, 300, 2000).await;
    work.setup();
    pivot_keys_compare_bytes_after_setup(&pg, &work).await;
    let (ok, out) = work.run_cmd(&["check"]);
    assert!(ok, "duplex check failed on the shipped mapping set:\n{out}");
    let mut child = work.start();
    wait_for(
        Duration::from_secs(120),
        "the initial copy",
        &work,
        || async {
            work.log().contains("b_sale_order_props_value: copied")
                && work.log().contains("b_sale_basket: copied")
        },
    )
    .await;
    copy_wrote_each_item_once(&pg, &mut my).await;

    // The shop goes on while duplex streams: new orders, a status change, edited and deleted
    // properties, a new price, a product moved to another shop, a deleted basket row.
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let mut batch = shop::OrderBatch::default();
    for _ in 0..150 {
        shop::order_rows(&mut rng, &mut shop, &mut batch, None);
    }
    batch.write(&mut my).await;
    my.query_drop(
        "UPDATE b_sale_order SET STATUS_ID = 'CO', DATE_STATUS = '2026-02-03 10:00:00' WHERE ID = 5;
         UPDATE b_sale_order_props_value SET VALUE = '  Новое Имя  ' WHERE ORDER_ID = 6 AND CODE IN ('nameRecipient', 'FIO');
         DELETE FROM b_sale_order_props_value WHERE ORDER_ID = 7 AND CODE = 'nameRecipient';
         DELETE FROM b_sale_order_props_value WHERE ORDER_ID = 8 AND CODE = 'data';
         UPDATE b_catalog_price SET PRICE = '77777.00' WHERE PRODUCT_ID = 1001 AND CATALOG_GROUP_ID = 1 AND QUANTITY_FROM IS NULL;
         UPDATE b_iblock_element_property SET VALUE = '17001' WHERE IBLOCK_ELEMENT_ID = 1002 AND IBLOCK_PROPERTY_ID = 290;
         DELETE FROM b_sale_basket WHERE ORDER_ID = 9 LIMIT 1;
         UPDATE b_user SET EMAIL = 'noemail@cvety.kz', PERSONAL_PHONE = '8 777 000 11 22' WHERE ID = 3;
         UPDATE b_iblock_element SET IBLOCK_ID = 27 WHERE ID = 1003;
         UPDATE b_sale_order SET USER_ID = 2 WHERE ID = 11;
         START TRANSACTION;
         DELETE FROM b_sale_order WHERE ID = 10;
         DELETE FROM b_sale_basket WHERE ORDER_ID = 10;
         DELETE FROM b_sale_order_props_value WHERE ORDER_ID = 10;
         COMMIT",
    )
    .await
    .unwrap();

    let want = wait_equal(&pg, &mut my, &work, Duration::from_secs(90)).await;
    let counts: Vec<String> = want
        .tables
        .iter()
        .map(|(t, rows)| format!("{t} {}", rows.len()))
        .collect();
    eprintln!("compared field by field: {}", counts.join(", "));
    assert!(want.tables["orders"].len() >= 2149, "{counts:?}");
    assert!(want.tables["order_items"].len() > 4000, "{counts:?}");
    assert!(want.unknown_status.is_empty());
    // The deleted order is gone with its items; the product moved out of the catalog infoblock
    // is gone from products.
    assert_eq!(pg_count(&pg, "orders WHERE bitrix_order_id = 10").await, 0);
    assert_eq!(
        pg_count(&pg, "order_items WHERE bitrix_order_id = 10").await,
        0
    );
    // …and its property values are gone from duplex.pivot too.
    assert_eq!(
        pg_count(
            &pg,
            "duplex.pivot WHERE target = 'public.orders' AND key = '10'"
        )
        .await,
        0
    );
    assert!(
        pg_count(
            &pg,
            "duplex.pivot WHERE target = 'public.orders' AND key = '11'"
        )
        .await
            > 0
    );
    assert!(!want.tables["products"].contains_key("1003"));
    assert_eq!(
        pg_count(&pg, "products WHERE bitrix_product_id = 1003").await,
        0
    );
    // No dead letters: every generated row maps.
    assert_eq!(pg_count(&pg, "duplex.dead_letter").await, 0);
    stop_cleanly(&mut child, &work);
}

/// The pivot table's key columns are `COLLATE "C"`; a table an earlier version made (in the
/// database's collation) is altered by `duplex setup`, keeping its rows.
async fn pivot_keys_compare_bytes_after_setup(pg: &tokio_postgres::Client, work: &Workdir) {
    let collations = || async {
        pg.query_one(
            "SELECT string_agg(attname || '=' || attcollation::regcollation::text, ',' ORDER BY attnum) \
             FROM pg_attribute WHERE attrelid = 'duplex.pivot'::regclass \
             AND attname IN ('pipeline', 'target', 'key', 'col')",
            &[],
        )
        .await
        .expect("read the pivot table's collations")
        .get::<_, String>(0)
    };
    let bytes = r#"pipeline="C",target="C",key="C",col="C""#;
    assert_eq!(collations().await, bytes, "a new pivot table");
    pg.batch_execute(
        "ALTER TABLE duplex.pivot ALTER COLUMN key TYPE text COLLATE \"default\", \
                                  ALTER COLUMN col TYPE text COLLATE \"default\"; \
         INSERT INTO duplex.pivot VALUES ('earlier', 'public.orders', '1', 'recipient', 1, 'kept')",
    )
    .await
    .expect("make the pivot table an earlier version's");
    assert_ne!(collations().await, bytes);
    work.setup();
    assert_eq!(
        collations().await,
        bytes,
        "after setup on an earlier pivot table"
    );
    let kept = pg
        .query_one(
            "DELETE FROM duplex.pivot WHERE pipeline = 'earlier' AND key = '1' RETURNING value",
            &[],
        )
        .await
        .expect("the earlier row")
        .get::<_, String>(0);
    assert_eq!(kept, "kept");
}

/// The copy wrote every order item once, its look-ups (order, product) filled as it was
/// written: orders and products are copied first, and the item's statement reads them, so no
/// item is updated afterwards (PostgreSQL's own row counters say so).
async fn copy_wrote_each_item_once(pg: &tokio_postgres::Client, my: &mut mysql_async::Conn) {
    // Basket rows of an order (a cart's rows have none and are not copied).
    let baskets: i64 = my
        .query_first("SELECT COUNT(*) FROM b_sale_basket WHERE ORDER_ID IS NOT NULL")
        .await
        .unwrap()
        .unwrap();
    assert!(baskets > 1000, "{baskets} basket rows");
    assert_eq!(pg_count(pg, "order_items").await, baskets);
    let counters = || async {
        let row = pg
            .query_one(
                "SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'order_items'",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    };
    // The writer's counters reach the statistics when its session idles (within ~10 s).
    let started = std::time::Instant::now();
    while counters().await.0 < baskets && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        counters().await,
        (baskets, 0),
        "order_items rows inserted, updated"
    );
    let unresolved = pg_count(
        pg,
        "order_items i WHERE i.order_id IS DISTINCT FROM (SELECT o.id FROM orders o WHERE o.bitrix_order_id = i.bitrix_order_id) \
         OR i.product_id IS DISTINCT FROM (SELECT p.id FROM products p WHERE p.bitrix_product_id = i.bitrix_product_id)",
    )
    .await;
    assert_eq!(unresolved, 0, "order items with a look-up not filled");
    assert!(pg_count(pg, "order_items WHERE order_id IS NOT NULL").await > 1000);
}

/// A shop with reference data, users, the catalog and a few orders, replicated; duplex running.
async fn running_shop(
    prefix: &str,
    orders: usize,
) -> (
    support::TestDbs,
    Workdir,
    shop::Shop,
    support::harness::Duplex,
) {
    let (dbs, work) = shop_dbs(prefix).await;
    let mut my = dbs.mysql().await;
    let shop = shop::generate(&mut my, 11, 40, orders).await;
    work.setup();
    let child = work.start();
    let pg = dbs.pg().await;
    wait_equal(&pg, &mut my, &work, Duration::from_secs(60)).await;
    (dbs, work, shop, child)
}

async fn in_txn(my: &mut mysql_async::Conn, parts: &[(&str, &str, &[String])]) {
    my.query_drop("START TRANSACTION").await.unwrap();
    for (table, cols, rows) in parts {
        shop::insert(my, table, cols, rows).await;
    }
    my.query_drop("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_saved_in_any_order_ends_complete() {
    let (dbs, work, mut shop, mut child) = running_shop("anyorder", 10).await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let (o, b, p) = (shop::ORDER_COLS, shop::BASKET_COLS, shop::PROP_COLS);
    // Each order's three parts, written in a different order and grouping of transactions.
    for shape in 0..6 {
        let mut batch = shop::OrderBatch::default();
        shop::order_rows(&mut rng, &mut shop, &mut batch, None);
        let (orders, baskets, props) = (&batch.orders, &batch.baskets, &batch.props);
        let order = ("b_sale_order", o, orders.as_slice());
        let basket = ("b_sale_basket", b, baskets.as_slice());
        let prop = ("b_sale_order_props_value", p, props.as_slice());
        match shape {
            // The way Bitrix's Order::save() does it: one transaction, order first.
            0 => in_txn(&mut my, &[order, basket, prop]).await,
            1 => {
                in_txn(&mut my, &[order]).await;
                in_txn(&mut my, &[basket]).await;
                in_txn(&mut my, &[prop]).await;
            }
            2 => {
                in_txn(&mut my, &[prop]).await;
                in_txn(&mut my, &[basket]).await;
                in_txn(&mut my, &[order]).await;
            }
            3 => {
                in_txn(&mut my, &[basket]).await;
                in_txn(&mut my, &[order, prop]).await;
            }
            4 => in_txn(&mut my, &[prop, basket, order]).await,
            _ => {
                in_txn(&mut my, &[prop]).await;
                in_txn(&mut my, &[order]).await;
                in_txn(&mut my, &[basket]).await;
            }
        }
    }
    wait_equal(&pg, &mut my, &work, Duration::from_secs(60)).await;
    // Every item of the new orders hangs off its order, and each order has its recipient.
    let rows = pg_rows(
        &pg,
        "SELECT count(*)::text, count(i.order_id)::text FROM order_items i WHERE i.bitrix_order_id > 10",
    )
    .await;
    assert_eq!(
        rows[0][0], rows[0][1],
        "items without their order: {rows:?}"
    );
    assert_ne!(rows[0][0].as_deref(), Some("0"));
    let incomplete = pg_count(
        &pg,
        "orders WHERE bitrix_order_id > 10 AND (order_number IS NULL OR recipient_name IS NULL OR status IS NULL)",
    )
    .await;
    assert_eq!(incomplete, 0);
    assert_eq!(pg_count(&pg, "orders WHERE bitrix_order_id > 10").await, 6);
    stop_cleanly(&mut child, &work);
}

/// An order's Bitrix-fed mirror columns as Bitrix has them and as the CRM has them (in the
/// shop's wall time): STATUS_ID, DATE_STATUS, DATE_UPDATE, DATE_CANCELED.
async fn mirrors(
    dbs: &support::TestDbs,
    pg: &tokio_postgres::Client,
    id: i64,
) -> (Vec<Row>, Vec<Row>) {
    let mut my = dbs.mysql().await;
    let want = mysql_rows(&mut my, &format!("SELECT STATUS_ID, DATE_STATUS, DATE_UPDATE, NULLIF(DATE_CANCELED, '0000-00-00 00:00:00') FROM b_sale_order WHERE ID = {id}")).await;
    let local =
        |c: &str| format!("to_char({c} AT TIME ZONE 'Asia/Almaty', 'YYYY-MM-DD HH24:MI:SS')");
    let have = pg_rows(
        pg,
        &format!(
            "SELECT bitrix_status, {}, {}, {} FROM orders WHERE bitrix_order_id = {id}",
            local("status_changed_at"),
            local("updated_at"),
            local("canceled_at")
        ),
    )
    .await;
    (want, have)
}

/// The Bitrix order row as text, without the columns a CRM status change may set.
async fn order_row(my: &mut mysql_async::Conn, id: i64) -> Vec<Option<String>> {
    let cols: Vec<String> = shop::ORDER_COLS
        .split(", ")
        .filter(|c| {
            !matches!(
                *c,
                "STATUS_ID" | "DATE_STATUS" | "DATE_UPDATE" | "CANCELED" | "DATE_CANCELED"
            )
        })
        .map(str::to_string)
        .collect();
    let mut r = mysql_rows(
        my,
        &format!(
            "SELECT {} FROM b_sale_order WHERE ID = {id}",
            cols.join(", ")
        ),
    )
    .await;
    r.pop().unwrap()
}

async fn one(my: &mut mysql_async::Conn, sql: &str) -> Option<String> {
    mysql_rows(my, sql)
        .await
        .pop()
        .and_then(|mut r| r.pop())
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_status_change_reaches_bitrix_with_its_time_and_does_not_come_back() {
    let (dbs, work, _shop, mut child) = running_shop("status", 30).await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("UPDATE b_sale_order SET STATUS_ID = 'N', CANCELED = 'N', DATE_STATUS = '2025-01-02 03:04:05', DATE_UPDATE = '2025-01-02 03:04:05', DATE_CANCELED = '0000-00-00 00:00:00' WHERE ID IN (3, 4, 5, 6, 8); UPDATE b_sale_order SET STATUS_ID = 'P' WHERE ID = 8")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "the reset orders",
        &work,
        || async {
            pg_count(
                &pg,
                "orders WHERE bitrix_order_id IN (3, 4, 5, 6) AND status = 'new' AND NOT canceled",
            )
            .await
                == 4
                && pg_count(
                    &pg,
                    "orders WHERE bitrix_order_id = 8 AND status = 'paid' AND NOT canceled",
                )
                .await
                    == 1
        },
    )
    .await;
    let before: Vec<_> = {
        let mut v = Vec::new();
        for id in 3..=6 {
            v.push(order_row(&mut my, id).await);
        }
        v
    };
    let pg_before = pg_rows(&pg, "SELECT bitrix_order_id::text, bitrix_status, status_changed_at::text, updated_at::text FROM orders WHERE bitrix_order_id IN (3, 4, 5, 6) ORDER BY 1").await;

    // The CRM: order 3 assembled, order 4 cancelled, order 5 paid (P and PD both read as paid;
    // the map's reverse entry says PD), order 6 only gets a CRM note.
    let local_now = || (chrono::Utc::now() + chrono::Duration::hours(5)).naive_utc();
    let started = local_now() - chrono::Duration::seconds(2);
    pg.batch_execute(
        "UPDATE orders SET status = 'assembled' WHERE bitrix_order_id = 3;
         UPDATE orders SET canceled = true WHERE bitrix_order_id = 8;
         UPDATE orders SET canceled = true WHERE bitrix_order_id = 4;
         UPDATE orders SET status = 'paid' WHERE bitrix_order_id = 5;
         UPDATE orders SET crm_note = 'позвонить флористу' WHERE bitrix_order_id = 6;
         INSERT INTO orders (status, order_number, source) VALUES ('new', 'CRM-1', 'crm')",
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(30), "the status changes in b_sale_order", &work, || async {
        let mut my = dbs.mysql().await;
        mysql_rows(&mut my, "SELECT ID, STATUS_ID, CANCELED FROM b_sale_order WHERE ID IN (3, 4, 5) ORDER BY ID").await
            == vec![
                vec![Some("3".into()), Some("CO".into()), Some("N".into())],
                vec![Some("4".into()), Some("N".into()), Some("Y".into())],
                vec![Some("5".into()), Some("PD".into()), Some("N".into())],
            ]
    })
    .await;
    let ended = local_now() + chrono::Duration::seconds(2);
    let dt = |s: Option<String>| {
        chrono::NaiveDateTime::parse_from_str(&s.unwrap(), "%Y-%m-%d %H:%M:%S").unwrap()
    };
    let within = |t: chrono::NaiveDateTime| t >= started && t <= ended;
    // Order 3: DATE_STATUS and DATE_UPDATE are the CRM's commit time in the shop's zone.
    let s3 = dt(one(&mut my, "SELECT DATE_STATUS FROM b_sale_order WHERE ID = 3").await);
    assert!(
        within(s3),
        "DATE_STATUS {s3} not between {started} and {ended}"
    );
    assert_eq!(
        dt(one(&mut my, "SELECT DATE_UPDATE FROM b_sale_order WHERE ID = 3").await),
        s3
    );
    assert_eq!(
        one(
            &mut my,
            "SELECT DATE_CANCELED FROM b_sale_order WHERE ID = 3"
        )
        .await
        .as_deref(),
        Some("0000-00-00 00:00:00")
    );
    // Order 4: DATE_CANCELED set, DATE_STATUS untouched.
    let c4 = dt(one(
        &mut my,
        "SELECT DATE_CANCELED FROM b_sale_order WHERE ID = 4",
    )
    .await);
    assert!(within(c4), "DATE_CANCELED {c4}");
    assert_eq!(
        one(&mut my, "SELECT DATE_STATUS FROM b_sale_order WHERE ID = 4")
            .await
            .as_deref(),
        Some("2025-01-02 03:04:05")
    );
    // Order 8 was P (paid) and only got cancelled: the CRM's "paid" already means P, so
    // STATUS_ID and DATE_STATUS stay; CANCELED and DATE_CANCELED change.
    let r8 = mysql_rows(
        &mut my,
        "SELECT STATUS_ID, DATE_STATUS, CANCELED FROM b_sale_order WHERE ID = 8",
    )
    .await;
    assert_eq!(
        r8,
        vec![vec![
            Some("P".into()),
            Some("2025-01-02 03:04:05".into()),
            Some("Y".into())
        ]]
    );
    // Order 6: a CRM-only column changed nothing in Bitrix.
    assert_eq!(
        mysql_rows(
            &mut my,
            "SELECT STATUS_ID, DATE_UPDATE FROM b_sale_order WHERE ID = 6"
        )
        .await,
        vec![vec![Some("N".into()), Some("2025-01-02 03:04:05".into())]]
    );
    // No other Bitrix column was written, and the CRM-made order did not become a Bitrix order.
    for (i, id) in (3..=6).enumerate() {
        assert_eq!(order_row(&mut my, id).await, before[i], "order {id}");
    }
    assert_eq!(
        one(&mut my, "SELECT count(*) FROM b_sale_order")
            .await
            .as_deref(),
        Some("30")
    );

    // Mirror freshness without echo: the Bitrix writes were duplex's own, and they come back
    // only as what they changed in Bitrix's own columns — bitrix_status, status_changed_at,
    // updated_at and canceled_at follow the Bitrix rows — while the CRM's values stay.
    wait_for(
        Duration::from_secs(30),
        "fresh mirror columns",
        &work,
        || async {
            let mut all = true;
            for id in [3, 4, 5, 6, 8] {
                let (want, have) = mirrors(&dbs, &pg, id).await;
                all &= want == have;
            }
            all
        },
    )
    .await;
    let (_, have3) = mirrors(&dbs, &pg, 3).await;
    assert_eq!(have3[0][0].as_deref(), Some("CO"));
    let pg_after = pg_rows(&pg, "SELECT bitrix_order_id::text, bitrix_status, status_changed_at::text, updated_at::text FROM orders WHERE bitrix_order_id IN (3, 4, 5, 6) ORDER BY 1").await;
    // Order 6 only had a CRM note: nothing went to Bitrix, nothing came back.
    assert_eq!(pg_after[3], pg_before[3]);
    assert_ne!(pg_after[0], pg_before[0]);
    // The CRM's own values stay as the CRM wrote them (no echo).
    assert_eq!(
        pg_rows(&pg, "SELECT bitrix_order_id::text, status, canceled::text FROM orders WHERE bitrix_order_id IN (3, 4, 5, 8) ORDER BY 1").await,
        vec![
            vec![Some("3".into()), Some("assembled".into()), Some("false".into())],
            vec![Some("4".into()), Some("new".into()), Some("true".into())],
            vec![Some("5".into()), Some("paid".into()), Some("false".into())],
            vec![Some("8".into()), Some("paid".into()), Some("true".into())],
        ]
    );

    // A status the map cannot turn into a Bitrix code is a dead letter on the MySQL side.
    pg.batch_execute("UPDATE orders SET status = 'mystery' WHERE bitrix_order_id = 7")
        .await
        .unwrap();
    let pipeline = support::harness::pipeline_name("status", &dbs);
    wait_for(
        Duration::from_secs(30),
        "the dead letter of the unknown status",
        &work,
        || async {
            let mut my = dbs.mysql().await;
            mysql_rows(
                &mut my,
                &format!("SELECT reason FROM duplex.dead_letter WHERE pipeline = '{pipeline}'"),
            )
            .await
            .len()
                == 1
        },
    )
    .await;
    let reason = one(
        &mut my,
        &format!("SELECT reason FROM duplex.dead_letter WHERE pipeline = '{pipeline}'"),
    )
    .await
    .unwrap();
    assert!(
        reason.contains("\"mystery\" is not in the reverse entries of map order_status"),
        "{reason}"
    );
    assert_ne!(
        one(&mut my, "SELECT STATUS_ID FROM b_sale_order WHERE ID = 7")
            .await
            .as_deref(),
        Some("mystery")
    );
    stop_cleanly(&mut child, &work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_codes_unreadable_dates_and_orphans_have_defined_outcomes() {
    let (dbs, work, mut shop, mut child) = running_shop("outcomes", 5).await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);

    // An order whose status code the map does not know: a dead letter naming the code.
    let mut batch = shop::OrderBatch::default();
    let zz = shop::order_rows(&mut rng, &mut shop, &mut batch, Some("ZZ"));
    batch.write(&mut my).await;
    wait_for(
        Duration::from_secs(30),
        "the dead letter of status ZZ",
        &work,
        || async {
            pg_count(
                &pg,
                "duplex.dead_letter WHERE source_table LIKE '%b_sale_order'",
            )
            .await
                == 1
        },
    )
    .await;
    let letter = pg_rows(
        &pg,
        "SELECT target_table, reason, row_data->>'ID' FROM duplex.dead_letter",
    )
    .await;
    assert_eq!(letter[0][0].as_deref(), Some("public.orders"));
    assert!(
        letter[0][1]
            .as_deref()
            .unwrap()
            .contains("\"ZZ\" is not in the entries of map order_status"),
        "{letter:?}"
    );
    assert_eq!(letter[0][2], Some(zz.to_string()));
    // Its properties still arrive (they own other columns; the generator writes them in a
    // transaction after the order's); the status is not guessed.
    wait_for(
        Duration::from_secs(30),
        "the properties of the dead-lettered order",
        &work,
        || async {
            pg_rows(
                &pg,
                &format!("SELECT status, order_number FROM orders WHERE bitrix_order_id = {zz}"),
            )
            .await
                == vec![vec![None, None]]
        },
    )
    .await;

    // An unreadable delivery date: delivery_date NULL, the text kept in delivery_date_raw.
    let mut batch = shop::OrderBatch::default();
    let odd = shop::order_rows(&mut rng, &mut shop, &mut batch, Some("N"));
    batch.write(&mut my).await;
    my.query_drop(format!("UPDATE b_sale_order_props_value SET VALUE = '31.02.2026 или позже' WHERE ORDER_ID = {odd} AND CODE = 'data'"))
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the unreadable date", &work, || async {
        pg_rows(&pg, &format!("SELECT delivery_date::text, delivery_date_raw FROM orders WHERE bitrix_order_id = {odd}")).await
            == vec![vec![None, Some("31.02.2026 или позже".into())]]
    })
    .await;

    // A basket row whose order never arrives waits with order_id NULL; when an order with that
    // id is saved after all, it is attached.
    my.query_drop("INSERT INTO b_sale_basket (ID, FUSER_ID, ORDER_ID, PRODUCT_ID, CURRENCY, PRICE, QUANTITY, NAME, LID) VALUES (900000, 1, 999999, 1001, 'KZT', '1000.0000', 1, 'Сирота', 's1')")
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the orphan basket row", &work, || async {
        pg_rows(&pg, "SELECT bitrix_order_id::text, order_id::text FROM order_items WHERE bitrix_basket_id = 900000").await
            == vec![vec![Some("999999".into()), None]]
    })
    .await;
    my.query_drop(format!("INSERT INTO b_sale_order (ID, LID, PERSON_TYPE_ID, STATUS_ID, PRICE, CURRENCY, USER_ID, DATE_INSERT, DATE_UPDATE, ACCOUNT_NUMBER) VALUES (999999, 's1', 1, 'N', '1000.0000', 'KZT', {}, NOW(), NOW(), 'late-1')", shop.users[1]))
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the orphan attached to its late order", &work, || async {
        pg_count(&pg, "order_items i JOIN orders o ON o.id = i.order_id WHERE i.bitrix_basket_id = 900000 AND o.bitrix_order_id = 999999").await == 1
    })
    .await;

    // The fix: the code goes into the map, SIGHUP, and new orders with it replicate.
    let maps = work.path().join("mappings").join("maps.toml");
    let text = std::fs::read_to_string(&maps).unwrap();
    std::fs::write(
        &maps,
        text.replace("CA = \"decide\"", "CA = \"decide\"\nZZ = \"special\""),
    )
    .unwrap();
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    wait_for(Duration::from_secs(30), "the reload", &work, || async {
        work.log().contains("mappings reloaded")
    })
    .await;
    let mut batch = shop::OrderBatch::default();
    let zz2 = shop::order_rows(&mut rng, &mut shop, &mut batch, Some("ZZ"));
    batch.write(&mut my).await;
    wait_for(
        Duration::from_secs(30),
        "an order with status ZZ after the reload",
        &work,
        || async {
            pg_rows(
                &pg,
                &format!("SELECT status FROM orders WHERE bitrix_order_id = {zz2}"),
            )
            .await
                == vec![vec![Some("special".into())]]
        },
    )
    .await;
    assert_eq!(pg_count(&pg, "duplex.dead_letter").await, 1);
    stop_cleanly(&mut child, &work);
}
