//! Hot reload: SIGHUP re-reads the mapping set. A valid set applies without a restart (a newly
//! mapped column is written from then on, a newly mapped table is copied and then streamed); an
//! invalid set is refused with its file, line and key, and replication goes on with the old one.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use support::harness::{pg_rows, stop_cleanly, wait_for, Workdir};

const BEFORE: &str =
    "[[table]]\nsource = \"t1\"\ntarget = \"t1\"\n[table.column]\nid = \"id\"\na = \"a\"\n";
const AFTER: &str = "[[table]]\nsource = \"t1\"\ntarget = \"t1\"\ncolumns = \"all\"\n\n[[table]]\nsource = \"t2\"\ntarget = \"t2\"\ncolumns = \"all\"\n";
const BROKEN: &str =
    "[[table]]\nsource = \"t1\"\ntarget = \"t1\"\n[table.column]\nid = \"id\"\nnope = \"a\"\n";

fn hangup(child: &support::harness::Duplex) {
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_valid_mapping_set_and_refuses_a_broken_one() {
    let dbs = support::fresh_dbs("reload").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    my.query_drop(
        "CREATE TABLE t1 (id int PRIMARY KEY, a int NOT NULL, b varchar(20));
         CREATE TABLE t2 (id int PRIMARY KEY, v varchar(20) NOT NULL);
         INSERT INTO t2 SELECT seq, CONCAT('было ', seq) FROM seq_1_to_100",
    )
    .await
    .unwrap();
    pg.batch_execute(
        "CREATE TABLE t1 (id integer PRIMARY KEY, a integer NOT NULL, b text);
         CREATE TABLE t2 (id integer PRIMARY KEY, v text NOT NULL)",
    )
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("reload", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("m.toml", BEFORE)]);
    let mapping = work.path().join("mappings").join("m.toml");
    work.setup();
    let mut child = work.start();

    my.query_drop("INSERT INTO t1 VALUES (1, 10, 'unmapped')")
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "row 1", &work, || async {
        pg_rows(&pg, "SELECT id::text, a::text, b FROM t1").await
            == vec![vec![Some("1".into()), Some("10".into()), None]]
    })
    .await;

    // A valid change: column b and table t2 are mapped now.
    std::fs::write(&mapping, AFTER).unwrap();
    hangup(&child);
    wait_for(Duration::from_secs(30), "the reload", &work, || async {
        work.log().contains("mappings reloaded")
    })
    .await;
    my.query_drop(
        "INSERT INTO t1 VALUES (2, 20, 'mapped now'); INSERT INTO t2 VALUES (101, 'новая')",
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(30),
        "row 2 with b, and t2 copied and streamed",
        &work,
        || async {
            pg_rows(&pg, "SELECT b FROM t1 WHERE id = 2").await
                == vec![vec![Some("mapped now".into())]]
                && pg_rows(&pg, "SELECT count(*)::text, min(v), max(id)::text FROM t2").await
                    == vec![vec![
                        Some("101".into()),
                        Some("было 1".into()),
                        Some("101".into()),
                    ]]
        },
    )
    .await;

    // A broken change is refused with where it is wrong; the running mappings stay.
    std::fs::write(&mapping, BROKEN).unwrap();
    hangup(&child);
    wait_for(Duration::from_secs(30), "the refusal", &work, || async {
        work.log().contains("mapping reload refused")
    })
    .await;
    let log = work.log();
    let refusal = &log[log.find("mapping reload refused").unwrap()..];
    assert!(
        refusal.contains("m.toml:") && refusal.contains("nope"),
        "the refusal does not say where: {}",
        refusal.lines().take(5).collect::<Vec<_>>().join("\n")
    );
    my.query_drop("INSERT INTO t1 VALUES (3, 30, 'still b'); INSERT INTO t2 VALUES (102, 'ещё')")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "rows after the refusal",
        &work,
        || async {
            pg_rows(&pg, "SELECT b FROM t1 WHERE id = 3").await
                == vec![vec![Some("still b".into())]]
                && pg_rows(&pg, "SELECT v FROM t2 WHERE id = 102").await
                    == vec![vec![Some("ещё".into())]]
        },
    )
    .await;
    stop_cleanly(&mut child, &work);
    assert_eq!(
        work.log().matches("mappings reloaded").count(),
        1,
        "exactly one reload applied"
    );
}

const BOTH_BEFORE: &str =
    "[[table]]\nsource = \"t1\"\ntarget = \"t1\"\ndirection = \"both\"\n[table.column]\nid = \"id\"\na = \"a\"\n";
const BOTH_AFTER: &str = "[[table]]\nsource = \"t1\"\ntarget = \"t1\"\ndirection = \"both\"\n[table.column]\nid = \"id\"\na = \"a\"\n\n[[table]]\nsource = \"t2\"\ntarget = \"t2\"\ndirection = \"both\"\n[table.column]\nid = \"id\"\nv = \"v\"\n";

/// The reload window: a SIGHUP maps a new `both` table while the CRM keeps editing it. duplex
/// adds the table to the publication itself once the new set is in place, copies Bitrix's rows
/// over the CRM's, and every CRM edit made from then on — during the copy too — ends up on both
/// sides; the rows the CRM left alone hold Bitrix's values on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_mapping_a_both_table_loses_no_crm_change() {
    let dbs = support::fresh_dbs("reload_both").await;
    let mut my = dbs.mysql().await;
    let pg = dbs.pg().await;
    const ROWS: u32 = 100_000;
    my.query_drop(format!(
        "CREATE TABLE t1 (id int PRIMARY KEY, a int NOT NULL);
         CREATE TABLE t2 (id int PRIMARY KEY, v varchar(40) NOT NULL);
         INSERT INTO t1 VALUES (1, 1);
         INSERT INTO t2 SELECT seq, CONCAT('b-', seq) FROM seq_1_to_{ROWS}"
    ))
    .await
    .unwrap();
    // The CRM already holds the rows (an earlier migration), with older values.
    pg.batch_execute(&format!(
        "CREATE TABLE t1 (id integer PRIMARY KEY, a integer NOT NULL);
         CREATE TABLE t2 (id integer PRIMARY KEY, v text NOT NULL);
         INSERT INTO t2 SELECT g, 'old-' || g FROM generate_series(1, {ROWS}) g"
    ))
    .await
    .unwrap();
    let pipeline = support::harness::pipeline_name("reload_both", &dbs);
    let work = Workdir::new(&dbs, &pipeline, "UTC", &[("m.toml", BOTH_BEFORE)]);
    let mapping = work.path().join("mappings").join("m.toml");
    work.setup();
    let mut child = work.start();
    wait_for(Duration::from_secs(30), "t1 copied", &work, || async {
        pg_rows(&pg, "SELECT a::text FROM t1").await == vec![vec![Some("1".into())]]
    })
    .await;

    std::fs::write(&mapping, BOTH_AFTER).unwrap();
    hangup(&child);
    wait_for(Duration::from_secs(30), "t2 published", &work, || async {
        pg_rows(
            &pg,
            "SELECT count(*)::text FROM pg_publication_tables WHERE tablename = 't2'",
        )
        .await
            == vec![vec![Some("1".into())]]
    })
    .await;
    // The CRM edits t2 from now on, while the copy runs.
    let mut last = std::collections::BTreeMap::new();
    for n in 0..400u32 {
        let id = 1 + (n * 7919) % ROWS;
        let v = format!("c-{n}");
        pg.batch_execute(&format!("UPDATE t2 SET v = '{v}' WHERE id = {id}"))
            .await
            .unwrap();
        last.insert(id, v);
        if n % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    my.query_drop("SET SESSION group_concat_max_len = 100000000")
        .await
        .unwrap();
    let digest_my = "SELECT MD5(GROUP_CONCAT(id, ':', v ORDER BY id SEPARATOR ',')) FROM t2";
    let digest_pg = "SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM t2";
    let edited: Vec<String> = last.keys().map(|k| k.to_string()).collect();
    let q = format!(
        "SELECT id, v FROM t2 WHERE id IN ({}) ORDER BY id",
        edited.join(",")
    );
    let want: Vec<Vec<Option<String>>> = last
        .iter()
        .map(|(id, v)| vec![Some(id.to_string()), Some(v.clone())])
        .collect();
    let mut agreed = false;
    for _ in 0..300 {
        let m = support::harness::mysql_rows(&mut my, digest_my).await;
        let p = pg_rows(&pg, digest_pg).await;
        let left_old = pg_rows(&pg, "SELECT count(*)::text FROM t2 WHERE v LIKE 'old-%'").await;
        if m == p
            && left_old == vec![vec![Some("0".into())]]
            && support::harness::mysql_rows(&mut my, &q).await == want
            && pg_rows(&pg, &q.replace("id, v", "id::text AS k, v")).await == want
        {
            agreed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !agreed {
        eprintln!(
            "digests {:?} {:?}, old left {:?}, mysql rows {:?}, pg rows {:?}",
            support::harness::mysql_rows(&mut my, digest_my).await,
            pg_rows(&pg, digest_pg).await,
            pg_rows(&pg, "SELECT count(*)::text FROM t2 WHERE v LIKE 'old-%'").await,
            support::harness::mysql_rows(&mut my, "SELECT count(*) FROM t2").await,
            pg_rows(&pg, "SELECT count(*)::text FROM t2").await,
        );
        panic!(
            "t2 differs from Bitrix's rows with the CRM's edits:\nmysql {:?}\npg    {:?}\n{}",
            &support::harness::mysql_rows(&mut my, &q).await[..10],
            &pg_rows(&pg, &q.replace("id, v", "id::text AS k, v")).await[..10],
            work.log()
        );
    }
    stop_cleanly(&mut child, &work);
}
