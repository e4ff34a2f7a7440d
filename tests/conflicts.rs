//! Both sides agree: the shipped `orders` mapping (status and cancellation go both ways) with
//! Bitrix and the CRM changing the *same* orders within the lag — one writer per side on the
//! same rows, with row locks held, with duplex stopped, and at random with `kill -9` — always
//! ends with both sides equal, the policy's value kept, the forward mirror columns equal to
//! Bitrix's row, nothing applied twice, and every conflict logged.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use rand::{RngExt, SeedableRng};
use support::harness::{mysql_rows, pg_count, pg_rows, stop_cleanly, Workdir};
use support::shop;

type Row = Vec<Option<String>>;

/// The CRM status a Bitrix code reads as (the shipped `order_status` map, codes used here).
fn crm_status(code: &str) -> &'static str {
    match code {
        "N" => "new",
        "AP" => "confirmed",
        "P" | "PD" => "paid",
        "CO" => "assembled",
        "DE" => "in_transit",
        "F" => "completed",
        other => panic!("code {other} is not used by these tests"),
    }
}

/// A shop of `orders` orders with the shipped mappings, `conflict` set to `policy` for orders;
/// duplex set up and started, the copy done.
async fn shop_with_policy(
    prefix: &str,
    policy: &str,
    orders: usize,
) -> (support::TestDbs, Workdir, support::harness::Duplex) {
    let (dbs, work) = shop::shop_dbs(prefix, |name, text| {
        if name != "orders.toml" {
            return text;
        }
        assert!(text.contains("conflict = \"crm\""), "the shipped default");
        text.replace("conflict = \"crm\"", &format!("conflict = \"{policy}\""))
    })
    .await;
    let mut my = dbs.mysql().await;
    shop::generate(&mut my, 11, 40, orders).await;
    // A known start: every order new, not cancelled.
    my.query_drop("UPDATE b_sale_order SET STATUS_ID = 'N', CANCELED = 'N', DATE_CANCELED = '0000-00-00 00:00:00'")
        .await
        .unwrap();
    work.setup();
    let child = work.start();
    wait_agree(&dbs, &work, Duration::from_secs(60)).await;
    (dbs, work, child)
}

/// Per order: the `both` columns and the forward mirrors as Bitrix has them, mapped the way
/// the shipped mapping maps them (status, canceled, bitrix_status, status_changed_at,
/// updated_at, canceled_at, total_amount, comment; dates in the shop's wall time).
async fn bitrix_side(dbs: &support::TestDbs) -> Vec<Row> {
    let mut my = dbs.mysql().await;
    mysql_rows(
        &mut my,
        "SELECT ID, STATUS_ID, IF(CANCELED = 'Y', 'true', 'false'), STATUS_ID,
                NULLIF(DATE_STATUS, '0000-00-00 00:00:00'), NULLIF(DATE_UPDATE, '0000-00-00 00:00:00'),
                NULLIF(DATE_CANCELED, '0000-00-00 00:00:00'), PRICE, NULLIF(TRIM(USER_DESCRIPTION), '')
         FROM b_sale_order ORDER BY ID",
    )
    .await
    .into_iter()
    .map(|mut r| {
        r[1] = r[1].as_deref().map(|c| crm_status(c).to_string());
        r
    })
    .collect()
}

/// The same as the CRM has it.
async fn crm_side(pg: &tokio_postgres::Client) -> Vec<Row> {
    let local =
        |c: &str| format!("to_char({c} AT TIME ZONE 'Asia/Almaty', 'YYYY-MM-DD HH24:MI:SS')");
    pg_rows(
        pg,
        &format!(
            "SELECT bitrix_order_id::text, status, canceled::text, bitrix_status, {}, {}, {}, total_amount::text, comment
             FROM orders WHERE bitrix_order_id IS NOT NULL ORDER BY orders.bitrix_order_id",
            local("status_changed_at"),
            local("updated_at"),
            local("canceled_at")
        ),
    )
    .await
}

/// Waits until both sides agree on every order, field by field.
async fn wait_agree(dbs: &support::TestDbs, work: &Workdir, within: Duration) {
    let pg = dbs.pg().await;
    let until = std::time::Instant::now() + within;
    loop {
        let b = bitrix_side(dbs).await;
        let c = crm_side(&pg).await;
        if b == c {
            return;
        }
        if std::time::Instant::now() > until {
            let diff: Vec<String> = b
                .iter()
                .zip(&c)
                .filter(|(x, y)| x != y)
                .take(10)
                .map(|(x, y)| format!("bitrix {x:?}\n   crm {y:?}"))
                .collect();
            // Every conflict logged for the orders that differ, on both sides.
            let keys: Vec<String> = b
                .iter()
                .zip(&c)
                .filter(|(x, y)| x != y)
                .filter_map(|(x, _)| x[0].clone())
                .collect();
            let mut my = dbs.mysql().await;
            let q = |from: &str| {
                format!(
                    "SELECT row_key, col, winner, before_value, incoming_value, current_value, txn_id \
                     FROM {from}.conflict WHERE row_key IN ('{}') ORDER BY id",
                    keys.join("','")
                )
            };
            let on_pg = pg_rows(&pg, &q("duplex")).await;
            let on_my = mysql_rows(&mut my, &q("duplex")).await;
            let kept = work.keep_log(&format!("conflicts-{}", std::process::id()));
            panic!(
                "the sides differ ({} vs {} orders):\n{}\nconflicts applying Bitrix's changes: {on_pg:?}\n\
                 conflicts applying the CRM's: {on_my:?}\nduplex log: {}",
                b.len(),
                c.len(),
                diff.join("\n"),
                kept.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The conflicts logged on each side: (direction, table, key, column, winner).
async fn conflicts(dbs: &support::TestDbs, pipeline: &str) -> (Vec<Row>, Vec<Row>) {
    let pg = dbs.pg().await;
    let mut my = dbs.mysql().await;
    let q = |from: &str| {
        format!("SELECT target_table, row_key, col, winner, before_value, incoming_value, current_value FROM {from}.conflict WHERE pipeline = '{pipeline}' ORDER BY id")
    };
    (
        pg_rows(&pg, &q("duplex")).await,
        mysql_rows(&mut my, &q("duplex")).await,
    )
}

async fn one(dbs: &support::TestDbs, sql: &str) -> Row {
    let mut my = dbs.mysql().await;
    mysql_rows(&mut my, sql).await.remove(0)
}

/// The lock reproduction from the issue: a Bitrix session holds order 3's row lock while the
/// CRM changes its status (duplex's reverse UPDATE waits), then Bitrix changes the price and
/// commits. Column by column there is no conflict: both sides end with the CRM's status and
/// Bitrix's price. Then the same with Bitrix also changing the status under the lock: a real
/// conflict, found by each direction, resolved for the CRM (the shipped policy) on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_lock_held_by_bitrix_ends_equal() {
    let (dbs, work, mut child) = shop_with_policy("lock", "crm", 10).await;
    let pipeline = support::harness::pipeline_name("lock", &dbs);
    let pg = dbs.pg().await;
    for (order, bitrix_sets, want_code) in [
        (3, "PRICE = PRICE + 1", "CO"),
        (
            4,
            "PRICE = PRICE + 1, STATUS_ID = 'AP', DATE_STATUS = NOW()",
            "CO",
        ),
    ] {
        let mut a = dbs.mysql().await;
        a.query_drop("BEGIN").await.unwrap();
        a.query_drop(format!(
            "SELECT * FROM b_sale_order WHERE ID = {order} FOR UPDATE"
        ))
        .await
        .unwrap();
        pg.batch_execute(&format!(
            "UPDATE orders SET status = 'assembled' WHERE bitrix_order_id = {order}"
        ))
        .await
        .unwrap();
        // duplex's reverse write now waits on the lock.
        let mut probe = dbs.mysql().await;
        let waited = async {
            for _ in 0..100 {
                let n = mysql_rows(&mut probe, "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'").await;
                if n[0][0].as_deref() != Some("0") {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
        .await;
        assert!(waited, "duplex never waited on the lock\n{}", work.log());
        a.query_drop(format!(
            "UPDATE b_sale_order SET {bitrix_sets}, DATE_UPDATE = NOW() WHERE ID = {order}"
        ))
        .await
        .unwrap();
        a.query_drop("COMMIT").await.unwrap();
        wait_agree(&dbs, &work, Duration::from_secs(30)).await;
        let status = one(
            &dbs,
            &format!("SELECT STATUS_ID FROM b_sale_order WHERE ID = {order}"),
        )
        .await;
        assert_eq!(status[0].as_deref(), Some(want_code), "order {order}");
    }
    let (on_pg, on_my) = conflicts(&dbs, &pipeline).await;
    // Order 3: none. Order 4: one on each side, the CRM's value kept.
    let row = |before: &str, incoming: &str, current: &str| {
        vec![
            None,
            Some("4".to_string()),
            None,
            Some("crm".to_string()),
            Some(before.to_string()),
            Some(incoming.to_string()),
            Some(current.to_string()),
        ]
    };
    let strip = |rows: Vec<Row>| -> Vec<Row> {
        rows.into_iter()
            .map(|mut r| {
                r[0] = None;
                r[2] = None;
                r
            })
            .collect()
    };
    assert_eq!(
        strip(on_pg.clone()),
        vec![row("new", "confirmed", "assembled")],
        "{on_pg:?}"
    );
    // Each side logs values in its own terms: Bitrix's codes on MariaDB.
    assert_eq!(
        strip(on_my.clone()),
        vec![row("N", "CO", "AP")],
        "{on_my:?}"
    );
    assert_eq!(on_pg[0][2].as_deref(), Some("status"));
    assert_eq!(on_my[0][2].as_deref(), Some("STATUS_ID"));
    stop_cleanly(&mut child, &work);
}

/// The three ways the sides used to drift, each with duplex stopped so that both changes are
/// waiting in both streams, for one policy: (a) both change the status, (b) the CRM changes the
/// status while Bitrix changes the price, (c) Bitrix changes the status while the CRM edits a
/// column of its own; and (d) both cancel / un-cancel.
async fn the_three_cases(policy: &str) {
    let prefix = format!("cases_{policy}");
    let (dbs, work, mut child) = shop_with_policy(&prefix, policy, 10).await;
    let pipeline = support::harness::pipeline_name(&prefix, &dbs);
    let pg = dbs.pg().await;
    let mut my = dbs.mysql().await;
    stop_cleanly(&mut child, &work);
    my.query_drop(
        "UPDATE b_sale_order SET STATUS_ID = 'AP', DATE_STATUS = NOW(), DATE_UPDATE = NOW() WHERE ID = 3;
         UPDATE b_sale_order SET PRICE = PRICE + 100, DATE_UPDATE = NOW() WHERE ID = 4;
         UPDATE b_sale_order SET STATUS_ID = 'DE', DATE_STATUS = NOW(), DATE_UPDATE = NOW() WHERE ID = 5;
         UPDATE b_sale_order SET CANCELED = 'Y', DATE_CANCELED = NOW() WHERE ID = 6",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "UPDATE orders SET status = 'assembled' WHERE bitrix_order_id = 3;
         UPDATE orders SET status = 'assembled' WHERE bitrix_order_id = 4;
         UPDATE orders SET crm_note = 'call the florist' WHERE bitrix_order_id = 5;
         UPDATE orders SET status = 'completed' WHERE bitrix_order_id = 6",
    )
    .await
    .unwrap();
    let mut child = work.start();
    wait_agree(&dbs, &work, Duration::from_secs(30)).await;
    let got = mysql_rows(
        &mut my,
        "SELECT ID, STATUS_ID, CANCELED FROM b_sale_order WHERE ID BETWEEN 3 AND 6 ORDER BY ID",
    )
    .await;
    let want = |id: &str, s: &str, c: &str| {
        vec![
            Some(id.to_string()),
            Some(s.to_string()),
            Some(c.to_string()),
        ]
    };
    // Under `newest` the CRM's changes, made after Bitrix's, win.
    let a = if policy == "bitrix" { "AP" } else { "CO" };
    assert_eq!(
        got,
        vec![
            want("3", a, "N"),
            want("4", "CO", "N"),
            want("5", "DE", "N"),
            want("6", "F", "Y")
        ],
        "policy {policy}"
    );
    // Order 4 kept Bitrix's price; order 5 kept the CRM's note.
    let note = pg_rows(&pg, "SELECT crm_note FROM orders WHERE bitrix_order_id = 5").await;
    assert_eq!(note, vec![vec![Some("call the florist".to_string())]]);
    // Only (a) is a conflict, found by each direction, won by the policy's side. Under
    // `newest` neither direction can decide alone: the side whose value changes logs it once
    // both changes' times are known.
    let (on_pg, on_my) = conflicts(&dbs, &pipeline).await;
    if policy == "newest" {
        assert!(on_pg.is_empty(), "{on_pg:?}");
        assert_eq!(on_my.len(), 1, "{on_my:?}");
        assert_eq!(on_my[0][1].as_deref(), Some("3"));
        assert_eq!(on_my[0][3].as_deref(), Some("crm"));
    } else {
        for side in [&on_pg, &on_my] {
            assert_eq!(side.len(), 1, "{on_pg:?} {on_my:?}");
            assert_eq!(side[0][1].as_deref(), Some("3"));
            assert_eq!(side[0][3].as_deref(), Some(policy));
        }
    }
    stop_cleanly(&mut child, &work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_end_equal_when_the_newest_wins() {
    the_three_cases("newest").await;
}

/// Under `newest` the later change wins whichever side made it, on both sides: order 3's CRM
/// status is older than Bitrix's (a whole second apart, Bitrix's clock), order 4's newer. Each
/// conflict is logged once, by the side whose value changed, with both changes' times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_keeps_the_later_change_on_both_sides() {
    let (dbs, work, mut child) = shop_with_policy("newest", "newest", 10).await;
    let pipeline = support::harness::pipeline_name("newest", &dbs);
    // `duplex check` measures the gap between the two servers' clocks (one machine here).
    let (ok, out) = work.run_cmd(&["check"]);
    let line = out.lines().find(|l| l.contains("clocks: MySQL's is"));
    assert!(ok && line.is_some_and(|l| !l.contains("FAIL")), "{out}");
    let pg = dbs.pg().await;
    let mut my = dbs.mysql().await;
    stop_cleanly(&mut child, &work);
    pg.batch_execute("UPDATE orders SET status = 'assembled' WHERE bitrix_order_id = 3")
        .await
        .unwrap();
    // Bitrix's clock has whole seconds: its changes must fall in a later second.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    my.query_drop(
        "UPDATE b_sale_order SET STATUS_ID = 'AP', DATE_STATUS = NOW(), DATE_UPDATE = NOW() WHERE ID = 3;
         UPDATE b_sale_order SET STATUS_ID = 'DE', DATE_STATUS = NOW(), DATE_UPDATE = NOW() WHERE ID = 4",
    )
    .await
    .unwrap();
    pg.batch_execute("UPDATE orders SET status = 'completed' WHERE bitrix_order_id = 4")
        .await
        .unwrap();
    let mut child = work.start();
    wait_agree(&dbs, &work, Duration::from_secs(30)).await;
    let got = mysql_rows(
        &mut my,
        "SELECT ID, STATUS_ID FROM b_sale_order WHERE ID IN (3, 4) ORDER BY ID",
    )
    .await;
    let want = |id: &str, s: &str| vec![Some(id.to_string()), Some(s.to_string())];
    assert_eq!(got, vec![want("3", "AP"), want("4", "F")]);
    let (on_pg, on_my) = conflicts(&dbs, &pipeline).await;
    assert_eq!(on_pg.len(), 1, "{on_pg:?}");
    assert_eq!(on_pg[0][1].as_deref(), Some("3"));
    assert_eq!(on_pg[0][3].as_deref(), Some("bitrix"));
    assert_eq!(on_my.len(), 1, "{on_my:?}");
    assert_eq!(on_my[0][1].as_deref(), Some("4"));
    assert_eq!(on_my[0][3].as_deref(), Some("crm"));
    for r in newest_times(&dbs, &pipeline).await {
        check_newest_winner(&r);
    }
    stop_cleanly(&mut child, &work);
}

/// The `newest` conflicts logged on both sides: (winner, Bitrix's change's second, the CRM's).
async fn newest_times(dbs: &support::TestDbs, pipeline: &str) -> Vec<Row> {
    let pg = dbs.pg().await;
    let mut my = dbs.mysql().await;
    let mut rows = pg_rows(
        &pg,
        &format!(
            "SELECT winner, floor(extract(epoch FROM source_commit))::bigint::text,
                    floor(extract(epoch FROM other_commit))::bigint::text
             FROM duplex.conflict WHERE pipeline = '{pipeline}' AND policy = 'newest'"
        ),
    )
    .await;
    rows.extend(
        mysql_rows(
            &mut my,
            &format!(
                "SELECT winner, FLOOR(UNIX_TIMESTAMP(other_commit)), FLOOR(UNIX_TIMESTAMP(source_commit))
                 FROM duplex.conflict WHERE pipeline = '{pipeline}' AND policy = 'newest'"
            ),
        )
        .await,
    );
    rows
}

/// A `newest` conflict went to the later change: the CRM's when its second is not earlier than
/// Bitrix's.
fn check_newest_winner(r: &Row) {
    let sec = |i: usize| -> i64 {
        let t = r[i]
            .as_deref()
            .unwrap_or_else(|| panic!("both times: {r:?}"));
        t.parse().unwrap()
    };
    let want = if sec(2) >= sec(1) { "crm" } else { "bitrix" };
    assert_eq!(r[0].as_deref(), Some(want), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_end_equal_when_the_crm_wins() {
    the_three_cases("crm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_end_equal_when_bitrix_wins() {
    the_three_cases("bitrix").await;
}

/// 10,000 changes over only 50 orders, from a Bitrix writer and a CRM writer at once (status,
/// cancellation, and columns only one side has), duplex killed with `kill -9` three times
/// meanwhile: at the end both sides agree on every order, every forward mirror is Bitrix's, no
/// Bitrix change was applied twice (a trigger counts every committed write of each change's
/// token), and the conflict log is not empty and holds only the policy's winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_conflicts_over_fifty_orders_end_equal() {
    random_conflicts("crm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_conflicts_end_equal_when_bitrix_wins() {
    random_conflicts("bitrix").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_conflicts_end_equal_when_the_newest_wins() {
    random_conflicts("newest").await;
}

async fn random_conflicts(policy: &str) {
    let prefix = format!("random_{policy}");
    let (dbs, work, child) = shop_with_policy(&prefix, policy, 50).await;
    let pipeline = support::harness::pipeline_name(&prefix, &dbs);
    let pg = dbs.pg().await;
    // Every committed write of a Bitrix change's token into orders.comment, counted.
    pg.batch_execute(
        "CREATE TABLE public.token_writes (token text PRIMARY KEY, n int NOT NULL);
         -- Runs as its owner: duplex's account (least privilege) may not write the table.
         CREATE FUNCTION token_write() RETURNS trigger LANGUAGE plpgsql
           SECURITY DEFINER SET search_path = public AS $$ BEGIN
           IF NEW.comment IS DISTINCT FROM OLD.comment AND NEW.comment LIKE 'b-%' THEN
             INSERT INTO public.token_writes VALUES (NEW.comment, 1) ON CONFLICT (token) DO UPDATE SET n = token_writes.n + 1;
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER token_write BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION token_write();",
    )
    .await
    .unwrap();
    const EACH: usize = 5_000;
    let bitrix = {
        let mut my = dbs.mysql().await;
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            // Per order, every status it set (in CRM terms).
            let mut all: std::collections::HashMap<i32, Vec<&str>> = Default::default();
            for n in 0..EACH {
                let id = rng.random_range(1..=50);
                let token = format!("b-{n}");
                let sql = match rng.random_range(0..10) {
                    0..=3 => {
                        let code = ["N", "AP", "PD", "CO", "DE", "F"][rng.random_range(0..6)];
                        all.entry(id).or_default().push(crm_status(code));
                        format!("UPDATE b_sale_order SET STATUS_ID = '{code}', DATE_STATUS = NOW(), DATE_UPDATE = NOW(), USER_DESCRIPTION = '{token}' WHERE ID = {id}")
                    }
                    4..=5 => {
                        let (c, d) = if rng.random_bool(0.5) { ("Y", "NOW()") } else { ("N", "'0000-00-00 00:00:00'") };
                        format!("UPDATE b_sale_order SET CANCELED = '{c}', DATE_CANCELED = {d}, USER_DESCRIPTION = '{token}' WHERE ID = {id}")
                    }
                    _ => format!("UPDATE b_sale_order SET PRICE = PRICE + 1, DATE_UPDATE = NOW(), USER_DESCRIPTION = '{token}' WHERE ID = {id}"),
                };
                my.query_drop(sql).await.unwrap();
            }
            all
        })
    };
    let crm = {
        let pg = dbs.pg().await;
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(2);
            let mut all: std::collections::HashMap<i32, Vec<&str>> = Default::default();
            for n in 0..EACH {
                let id = rng.random_range(1..=50);
                let sql = match rng.random_range(0..10) {
                    0..=3 => {
                        let s = [
                            "new",
                            "confirmed",
                            "paid",
                            "assembled",
                            "in_transit",
                            "completed",
                        ][rng.random_range(0..6)];
                        all.entry(id).or_default().push(s);
                        format!("UPDATE orders SET status = '{s}' WHERE bitrix_order_id = {id}")
                    }
                    4..=5 => format!(
                        "UPDATE orders SET canceled = {} WHERE bitrix_order_id = {id}",
                        rng.random_bool(0.5)
                    ),
                    _ => {
                        format!("UPDATE orders SET crm_note = 'c-{n}' WHERE bitrix_order_id = {id}")
                    }
                };
                pg.batch_execute(&sql).await.unwrap();
            }
            all
        })
    };
    // Three kills at random moments while both write.
    let mut child = child;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        support::harness::kill9(&mut child);
        child = work.start();
    }
    let bitrix_all = bitrix.await.unwrap();
    let crm_all = crm.await.unwrap();
    assert!(
        matches!(child.0.try_wait(), Ok(None)),
        "duplex stopped:\n{}",
        work.log()
    );
    wait_agree(&dbs, &work, Duration::from_secs(120)).await;
    let twice = pg_rows(
        &pg,
        "SELECT token, n::text FROM token_writes WHERE n > 1 LIMIT 5",
    )
    .await;
    assert!(twice.is_empty(), "Bitrix changes applied twice: {twice:?}");
    let written = pg_rows(&pg, "SELECT count(*)::text FROM token_writes").await;
    assert_ne!(written[0][0].as_deref(), Some("0"));
    let (on_pg, on_my) = conflicts(&dbs, &pipeline).await;
    // Under `newest` only the side whose value changes logs a conflict: which side that is
    // depends on the race.
    let logged = if policy == "newest" {
        !on_pg.is_empty() || !on_my.is_empty()
    } else {
        !on_pg.is_empty() && !on_my.is_empty()
    };
    assert!(logged, "{} / {} conflicts", on_pg.len(), on_my.len());
    if policy == "newest" {
        for r in newest_times(&dbs, &pipeline).await {
            check_newest_winner(&r);
        }
        // Each order's status is the newer of the two sides' last changes.
        let kept = pg_rows(
            &pg,
            &format!(
                "SELECT n.pk, n.bitrix_value, (n.bitrix_ts / 1000000)::text, n.crm_value,
                        (n.crm_ts / 1000000)::text, o.status
                 FROM duplex.newest n JOIN orders o ON o.bitrix_order_id::text = n.pk
                 WHERE n.pipeline = '{pipeline}' AND n.col = 'status'"
            ),
        )
        .await;
        let mut checked = 0;
        for r in &kept {
            let id: i32 = r[0].as_deref().unwrap().parse().unwrap();
            // Each half is a value its side wrote. (Not always its last write: one of the value
            // the row already holds changes nothing, and is no change.)
            let wrote = |side: &std::collections::HashMap<i32, Vec<&str>>, v: &Option<String>| {
                side.get(&id)
                    .is_some_and(|all| all.contains(&v.as_deref().unwrap_or("")))
            };
            assert!(wrote(&bitrix_all, &r[1]) && wrote(&crm_all, &r[3]), "{r:?}");
            let sec = |i: usize| r[i].as_deref().map(|s| s.parse::<i64>().unwrap());
            let crm_newer = match (sec(2), sec(4)) {
                (Some(b), Some(c)) => c >= b,
                (b, _) => b.is_none(),
            };
            assert_eq!(
                r[5],
                if crm_newer {
                    r[3].clone()
                } else {
                    r[1].clone()
                },
                "{r:?}"
            );
            checked += 1;
        }
        assert!(
            checked >= 45,
            "{checked} orders with both sides' last status"
        );
    } else {
        for r in on_pg.iter().chain(&on_my) {
            assert_eq!(r[3].as_deref(), Some(policy), "{r:?}");
        }
    }
    eprintln!(
        "policy {policy}: {} conflicts found applying Bitrix's changes, {} applying the CRM's",
        on_pg.len(),
        on_my.len()
    );
    stop_cleanly(&mut child, &work);
}

/// The copy window: the CRM already holds orders (an earlier migration), duplex is set up (its
/// slot starts there), the CRM changes an order's status, and only then does duplex start and
/// copy Bitrix's orders over the CRM's rows. The CRM's change arrives in Bitrix and stays in
/// the CRM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_change_between_setup_and_the_copy_is_kept() {
    let (dbs, work) = shop::shop_dbs("window", |_, text| text).await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    shop::generate(&mut my, 11, 40, 10).await;
    my.query_drop("UPDATE b_sale_order SET STATUS_ID = 'N', CANCELED = 'N'")
        .await
        .unwrap();
    // The earlier migration's rows: the orders with their status.
    let ids = mysql_rows(
        &mut my,
        "SELECT ID, ACCOUNT_NUMBER FROM b_sale_order ORDER BY ID",
    )
    .await;
    for r in &ids {
        pg.execute(
            "INSERT INTO orders (bitrix_order_id, order_number, status, canceled, source) VALUES ($1::text::int, $2, 'new', false, 'bitrix')",
            &[&r[0], &r[1]],
        )
        .await
        .unwrap();
    }
    work.setup();
    pg.batch_execute("UPDATE orders SET status = 'assembled' WHERE bitrix_order_id = 7")
        .await
        .unwrap();
    let mut child = work.start();
    // The copy alone makes the sides agree (on Bitrix's `new`); the CRM's change follows.
    support::harness::wait_for(
        Duration::from_secs(60),
        "the CRM's change in Bitrix",
        &work,
        || async {
            one(&dbs, "SELECT STATUS_ID FROM b_sale_order WHERE ID = 7").await[0].as_deref()
                == Some("CO")
        },
    )
    .await;
    wait_agree(&dbs, &work, Duration::from_secs(60)).await;
    let crm = pg_rows(&pg, "SELECT status FROM orders WHERE bitrix_order_id = 7").await;
    assert_eq!(crm, vec![vec![Some("assembled".to_string())]]);
    stop_cleanly(&mut child, &work);
}

/// A table whose every column goes both ways, `conflict = "bitrix"`: Bitrix changes a status
/// and changes it back (A → B → A) while the CRM changes it to C, all while duplex is stopped.
/// Forward, Bitrix's B wins the conflict and A follows; the way back the CRM's C finds A, its
/// before value, and goes through. Only duplex's own MariaDB write, read back, brings C to
/// PostgreSQL too: both sides end with C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_changed_and_changed_back_meets_the_crm_change_and_ends_equal() {
    let (dbs, work, pipeline) = status_table("aba", "bitrix", "(1, 'A')").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let mut child = work.start();
    let agree = |want: &'static str| {
        let (dbs, pg) = (&dbs, &pg);
        async move { agree_on(dbs, pg, &[want]).await }
    };
    support::harness::wait_for(Duration::from_secs(30), "the copy", &work, || agree("A")).await;
    stop_cleanly(&mut child, &work);
    my.query_drop("UPDATE t SET status = 'B' WHERE id = 1")
        .await
        .unwrap();
    my.query_drop("UPDATE t SET status = 'A' WHERE id = 1")
        .await
        .unwrap();
    pg.batch_execute("UPDATE t SET status = 'C' WHERE id = 1")
        .await
        .unwrap();
    let mut child = work.start();
    support::harness::wait_for(Duration::from_secs(30), "both sides at C", &work, || {
        agree("C")
    })
    .await;
    let (on_pg, _) = conflicts(&dbs, &pipeline).await;
    assert!(!on_pg.is_empty(), "Bitrix's B met the CRM's C");
    stop_cleanly(&mut child, &work);
}

/// A table `t (id, status)` on both sides, mapped `both` with conflict policy `policy`, holding
/// the rows `rows` (SQL values) in MariaDB; duplex set up, not started. Returns the pipeline name
/// too.
async fn status_table(
    prefix: &str,
    policy: &str,
    rows: &str,
) -> (support::TestDbs, Workdir, String) {
    let dbs = support::fresh_dbs(prefix).await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, status varchar(20))")
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE t (id integer PRIMARY KEY, status text)")
        .await
        .unwrap();
    let mapping = format!("[[table]]\nsource = \"t\"\ntarget = \"t\"\ndirection = \"both\"\nconflict = \"{policy}\"\n[table.column]\nid = \"id\"\nstatus = \"status\"\n");
    let pipeline = support::harness::pipeline_name(prefix, &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("t.toml", mapping.as_str())]);
    my.query_drop(format!("INSERT INTO t VALUES {rows}"))
        .await
        .unwrap();
    work.setup();
    (dbs, work, pipeline)
}

/// Whether both sides hold the same rows of `t`, with these statuses in id order.
async fn agree_on(dbs: &support::TestDbs, pg: &tokio_postgres::Client, want: &[&str]) -> bool {
    let mut my = dbs.mysql().await;
    let m = mysql_rows(&mut my, "SELECT id, status FROM t ORDER BY id").await;
    let p = pg_rows(pg, "SELECT id::text, status FROM t ORDER BY id").await;
    let got: Vec<Option<&str>> = p.iter().map(|r| r[1].as_deref()).collect();
    let want: Vec<Option<&str>> = want.iter().map(|s| Some(*s)).collect();
    m == p && got == want
}

/// How one table of a stale-value test is reached: its names on each side and how a status is
/// written there.
struct StaleCase {
    /// `UPDATE` of row `{id}` to status `{s}` on MariaDB (`{s}` a Bitrix value).
    my_set: &'static str,
    /// The same on PostgreSQL (`{s}` a CRM value).
    pg_set: &'static str,
    /// `SELECT … FOR UPDATE` of row `{id}` on MariaDB.
    my_lock: &'static str,
    /// The CRM's status of row `{id}`.
    pg_get: &'static str,
    /// A status in Bitrix's terms, by the CRM's name for it.
    code: fn(&str) -> &'static str,
}

/// A Bitrix value the CRM already has gets forwarded late (a conflict Bitrix wins) while duplex's
/// own write of the CRM's newer value waits in the binlog, and the CRM changes the row again
/// meanwhile. The sequence, with the way back held up by a Bitrix row lock on another row:
/// the CRM sets row 1 to `confirmed`, then `in_transit`; Bitrix sets it to `confirmed`
/// itself, which reaches the CRM as a conflict won by Bitrix (`confirmed`); the CRM sets
/// `paid`; then the lock goes. The way back finds `confirmed` for `in_transit` (written:
/// duplex's own write) and `in_transit` for `paid` (a conflict Bitrix wins: kept). duplex's own
/// write read back must then still bring `in_transit` to the CRM, which moved on to `paid`, or
/// the sides stay apart for good.
async fn a_stale_value_and_a_crm_change_meet(
    dbs: &support::TestDbs,
    work: &Workdir,
    case: &StaleCase,
    agree: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>,
) {
    let pg = dbs.pg().await;
    let mut my = dbs.mysql().await;
    let sub = |sql: &str, id: u32, s: &str| sql.replace("{id}", &id.to_string()).replace("{s}", s);
    let mut lock = dbs.mysql().await;
    lock.query_drop("BEGIN").await.unwrap();
    lock.query_drop(sub(case.my_lock, 2, "")).await.unwrap();
    pg.batch_execute(&sub(case.pg_set, 2, "assembled"))
        .await
        .unwrap();
    support::harness::wait_for(
        Duration::from_secs(30),
        "duplex's way back waiting on the lock",
        work,
        || {
            let dbs = dbs.clone();
            async move {
                // duplex's conflict check of row 2, waiting (the lock holder's own query is done).
                let n = mysql_rows(
                    &mut dbs.mysql().await,
                    "SELECT count(*) FROM information_schema.processlist \
                     WHERE command = 'Query' AND info LIKE CONCAT('SELECT %', DATABASE(), '%FOR UPDATE') AND id <> CONNECTION_ID()",
                )
                .await;
                n[0][0].as_deref() != Some("0")
            }
        },
    )
    .await;
    pg.batch_execute(&sub(case.pg_set, 1, "confirmed"))
        .await
        .unwrap();
    pg.batch_execute(&sub(case.pg_set, 1, "in_transit"))
        .await
        .unwrap();
    my.query_drop(sub(case.my_set, 1, (case.code)("confirmed")))
        .await
        .unwrap();
    let status_1 = || {
        let pg = &pg;
        async move { pg_rows(pg, &sub(case.pg_get, 1, "")).await[0][0].as_deref() == Some("confirmed") }
    };
    support::harness::wait_for(
        Duration::from_secs(30),
        "Bitrix's confirmed at the CRM",
        work,
        status_1,
    )
    .await;
    pg.batch_execute(&sub(case.pg_set, 1, "paid"))
        .await
        .unwrap();
    lock.query_drop("ROLLBACK").await.unwrap();
    support::harness::wait_for(Duration::from_secs(30), "both sides equal", work, agree).await;
}

/// [`a_stale_value_and_a_crm_change_meet`] on the shipped orders mapping (mirrors: each change
/// decided row by row) under `conflict = "bitrix"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_bitrix_value_then_a_crm_change_end_equal_on_orders() {
    let (dbs, work, mut child) = shop_with_policy("stale", "bitrix", 2).await;
    let case = StaleCase {
        my_set: "UPDATE b_sale_order SET STATUS_ID = '{s}', DATE_STATUS = NOW(), DATE_UPDATE = NOW() WHERE ID = {id}",
        pg_set: "UPDATE orders SET status = '{s}' WHERE bitrix_order_id = {id}",
        my_lock: "SELECT * FROM b_sale_order WHERE ID = {id} FOR UPDATE",
        pg_get: "SELECT status FROM orders WHERE bitrix_order_id = {id}",
        code: |s| match s {
            "confirmed" => "AP",
            other => panic!("{other} is not used here"),
        },
    };
    let agree = || -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
        let dbs = dbs.clone();
        Box::pin(async move {
            let pg = dbs.pg().await;
            bitrix_side(&dbs).await == crm_side(&pg).await
        })
    };
    a_stale_value_and_a_crm_change_meet(&dbs, &work, &case, agree).await;
    let row = one(&dbs, "SELECT STATUS_ID FROM b_sale_order WHERE ID = 1").await;
    assert_eq!(
        row[0].as_deref(),
        Some("DE"),
        "the CRM's in_transit, which Bitrix took"
    );
    stop_cleanly(&mut child, &work);
}

/// The same on a table whose every column goes both ways (duplex's own writes read back take
/// one conditional UPDATE there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_bitrix_value_then_a_crm_change_end_equal_without_mirrors() {
    let dbs = support::fresh_dbs("stale_t").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop("CREATE TABLE t (id int PRIMARY KEY, status varchar(20)); INSERT INTO t VALUES (1, 'new'), (2, 'new')")
        .await
        .unwrap();
    pg.batch_execute("CREATE TABLE t (id integer PRIMARY KEY, status text)")
        .await
        .unwrap();
    let mapping = "[[table]]\nsource = \"t\"\ntarget = \"t\"\ndirection = \"both\"\nconflict = \"bitrix\"\n[table.column]\nid = \"id\"\nstatus = \"status\"\n";
    let pipeline = support::harness::pipeline_name("stale_t", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("t.toml", mapping)]);
    work.setup();
    let mut child = work.start();
    let agree = || -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
        let dbs = dbs.clone();
        Box::pin(async move {
            let mut my = dbs.mysql().await;
            let pg = dbs.pg().await;
            let m = mysql_rows(&mut my, "SELECT id, status FROM t ORDER BY id").await;
            let p = pg_rows(&pg, "SELECT id::text, status FROM t ORDER BY t.id").await;
            m == p && m.len() == 2
        })
    };
    support::harness::wait_for(Duration::from_secs(30), "the copy", &work, &agree).await;
    let case = StaleCase {
        my_set: "UPDATE t SET status = '{s}' WHERE id = {id}",
        pg_set: "UPDATE t SET status = '{s}' WHERE id = {id}",
        my_lock: "SELECT * FROM t WHERE id = {id} FOR UPDATE",
        pg_get: "SELECT status FROM t WHERE id = {id}",
        code: |s| match s {
            "confirmed" => "confirmed",
            other => panic!("{other} is not used here"),
        },
    };
    a_stale_value_and_a_crm_change_meet(&dbs, &work, &case, agree).await;
    let row = mysql_rows(&mut my, "SELECT status FROM t WHERE id = 1").await;
    assert_eq!(row[0][0].as_deref(), Some("in_transit"));
    stop_cleanly(&mut child, &work);
}

/// A row deleted and inserted again within one Bitrix transaction, after a change of another
/// row: the inserted row's check must see the delete (it is written first), or the check would
/// meet the old row's value and keep it as a conflict the CRM wins. Both sides end with the new
/// row and no conflict is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_deleted_and_inserted_again_in_one_transaction_takes_the_new_values() {
    let (dbs, work, pipeline) = status_table("reins", "crm", "(1, 'A'), (2, 'A')").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    let mut child = work.start();
    let agree = |want: &'static [&'static str]| agree_on(&dbs, &pg, want);
    support::harness::wait_for(Duration::from_secs(30), "the copy", &work, || {
        agree(&["A", "A"])
    })
    .await;
    my.query_drop(
        "START TRANSACTION;
         UPDATE t SET status = 'X' WHERE id = 2;
         DELETE FROM t WHERE id = 1;
         INSERT INTO t VALUES (1, 'B');
         COMMIT",
    )
    .await
    .unwrap();
    support::harness::wait_for(
        Duration::from_secs(30),
        "B and X on both sides",
        &work,
        || agree(&["B", "X"]),
    )
    .await;
    let (on_pg, on_my) = conflicts(&dbs, &pipeline).await;
    assert!(on_pg.is_empty() && on_my.is_empty(), "{on_pg:?} {on_my:?}");
    stop_cleanly(&mut child, &work);
}

/// duplex's own write of a table without mirrors, read back in a batch PostgreSQL refuses (a
/// Bitrix row breaking a CHECK right behind it): careful mode re-applies the batch row by row,
/// and the own write is there the same conditional UPDATE as in a batch (it carries no texts
/// to be decided with). The forward writer is held on a locked table while two CRM changes go
/// to MariaDB and the bad row follows, so they wait in one batch; the first own write, read
/// back, meets the second CRM value and, Bitrix winning, is written. Both sides end with the
/// CRM's last value, the bad row is the one dead letter, no conflict is logged, duplex runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_write_in_a_refused_batch_is_applied_row_by_row() {
    let dbs = support::fresh_dbs("own_careful").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE t (id int PRIMARY KEY, status varchar(20)); INSERT INTO t VALUES (1, 'new');
         CREATE TABLE gate (id int PRIMARY KEY); CREATE TABLE bad (id int PRIMARY KEY, v int)",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE t (id integer PRIMARY KEY, status text);
         CREATE TABLE gate (id integer PRIMARY KEY);
         CREATE TABLE bad (id integer PRIMARY KEY, v integer CHECK (v > 0))",
    )
    .await
    .unwrap();
    let mapping = "[[table]]\nsource = \"t\"\ntarget = \"t\"\ndirection = \"both\"\nconflict = \"bitrix\"\n[table.column]\nid = \"id\"\nstatus = \"status\"\n\n\
                   [[table]]\nsource = \"gate\"\ntarget = \"gate\"\ncolumns = \"all\"\n\n\
                   [[table]]\nsource = \"bad\"\ntarget = \"bad\"\ncolumns = \"all\"\n";
    let pipeline = support::harness::pipeline_name("own_careful", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("t.toml", mapping)]);
    work.setup();
    let mut child = work.start();
    let status = |want: &'static str| {
        let dbs = dbs.clone();
        move || -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
            let dbs = dbs.clone();
            Box::pin(async move {
                let mut my = dbs.mysql().await;
                let pg = dbs.pg().await;
                let m = mysql_rows(&mut my, "SELECT id, status FROM t").await;
                let p = pg_rows(&pg, "SELECT id::text, status FROM t").await;
                let row = vec![Some("1".to_string()), Some(want.to_string())];
                m == p && m == [row]
            })
        }
    };
    support::harness::wait_for(Duration::from_secs(30), "the copy", &work, status("new")).await;
    // Hold the forward writer on `gate`.
    let locker = dbs.pg().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    my.query_drop("INSERT INTO gate VALUES (1)").await.unwrap();
    support::harness::wait_for(
        Duration::from_secs(30),
        "duplex waiting for the lock on gate",
        &work,
        || async {
            let waiting = pg_rows(
                &pg,
                "SELECT count(*)::text FROM pg_locks WHERE NOT granted AND relation = 'gate'::regclass",
            )
            .await;
            waiting[0][0].as_deref() != Some("0")
        },
    )
    .await;
    // Two CRM changes reach MariaDB (duplex's own writes), and a bad Bitrix row follows them.
    // The first, read back, meets the second in PostgreSQL: Bitrix wins, so it is written.
    for s in ["confirmed", "paid"] {
        pg.execute(&format!("UPDATE t SET status = '{s}' WHERE id = 1"), &[])
            .await
            .unwrap();
        support::harness::wait_for(
            Duration::from_secs(30),
            "the CRM's change in MariaDB",
            &work,
            || {
                let dbs = dbs.clone();
                async move {
                    let mut my = dbs.mysql().await;
                    mysql_rows(&mut my, "SELECT status FROM t").await == [vec![Some(s.to_string())]]
                }
            },
        )
        .await;
    }
    my.query_drop("INSERT INTO bad VALUES (1, -1)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    locker.batch_execute("COMMIT").await.unwrap();
    support::harness::wait_for(
        Duration::from_secs(60),
        "gate's row and bad's dead letter",
        &work,
        || async {
            let letters = pg_rows(&pg, "SELECT count(*)::text FROM duplex.dead_letter").await;
            pg_count(&pg, "gate").await == 1 && letters[0][0].as_deref() == Some("1")
        },
    )
    .await;
    support::harness::wait_for(
        Duration::from_secs(30),
        "paid on both sides",
        &work,
        status("paid"),
    )
    .await;
    let letters = pg_rows(&pg, "SELECT target_table, reason FROM duplex.dead_letter").await;
    assert!(
        letters[0][0].as_deref().unwrap_or_default().contains("bad")
            && letters[0][1]
                .as_deref()
                .unwrap_or_default()
                .contains("check"),
        "{letters:?}"
    );
    assert!(
        work.log().contains("re-applying row by row"),
        "the batch was not refused"
    );
    let (on_pg, on_my) = conflicts(&dbs, &pipeline).await;
    assert!(on_pg.is_empty() && on_my.is_empty(), "{on_pg:?} {on_my:?}");
    assert!(matches!(child.0.try_wait(), Ok(None)), "duplex stopped");
    stop_cleanly(&mut child, &work);
}
