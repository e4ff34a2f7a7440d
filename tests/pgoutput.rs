//! The pgoutput decoder against real bytes: changes made on the private PostgreSQL 15 are read
//! back from a logical slot with `pg_logical_slot_peek_binary_changes` (each row one pgoutput
//! message, the same bytes a walsender puts after the XLogData header) and decoded, with
//! protocol versions 1 and 2.

mod support;

use std::panic::AssertUnwindSafe;

use duplex::model::Lsn;
use duplex::source::postgres::pgoutput::{decode, Cell, OldKind, PgOutput, Tuple};
use futures_util::FutureExt;

const SCHEMA: &str = "
    CREATE TYPE mood AS ENUM ('happy', 'sad');
    CREATE TABLE items (
        id integer PRIMARY KEY,
        name text NOT NULL,
        price numeric(10, 2),
        active boolean,
        at timestamptz,
        doc jsonb,
        raw bytea,
        big text,
        feeling mood
    );
    -- Out of line and uncompressed, so a value over ~2 kB is surely TOASTed on disk.
    ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
    CREATE TABLE audit (id integer, note text);
    ALTER TABLE audit REPLICA IDENTITY FULL;
    CREATE PUBLICATION p FOR TABLE items, audit;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decodes_what_postgres_sends() {
    let dbs = support::fresh_dbs("pgoutput").await;
    let pg = dbs.pg().await;
    // Slots and origins are server-wide: name them after the (unique) database.
    let slot = format!("s_{}", dbs.pg_db);
    let origin = format!("o_{}", dbs.pg_db);
    pg.batch_execute(SCHEMA).await.unwrap();
    pg.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&slot],
    )
    .await
    .unwrap();

    let outcome = AssertUnwindSafe(scenario(&dbs, &pg, &slot, &origin))
        .catch_unwind()
        .await;

    let dropped = pg
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await;
    let origin_dropped = pg
        .execute(
            "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin \
             WHERE roname = $1",
            &[&origin],
        )
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    dropped.unwrap();
    origin_dropped.unwrap();
}

/// The changes, one transaction each unless said otherwise.
const CHANGES: &[&str] = &[
    "BEGIN;
     INSERT INTO items VALUES (42, 'widget', 12.50, true, '2024-05-06 07:08:09.123456+00',
         '{\"a\": [1, 2]}', '\\x00ff10',
         (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 100) i), 'happy');
     INSERT INTO audit VALUES (1, 'a');
     COMMIT",
    "UPDATE items SET name = 'gadget' WHERE id = 42",
    "UPDATE items SET id = 43 WHERE id = 42",
    "UPDATE audit SET note = 'b' WHERE id = 1",
    "DELETE FROM audit WHERE id = 1",
    "DELETE FROM items WHERE id = 43",
    "BEGIN;
     SELECT pg_logical_emit_message(true, 'duplex', 'hello');
     SELECT pg_logical_emit_message(false, 'duplex', 'bye');
     COMMIT",
];

/// One message read from the slot: the row's `lsn`, its bytes and what they decode to.
struct Read {
    lsn: Lsn,
    data: Vec<u8>,
    msg: PgOutput,
}

async fn peek(pg: &tokio_postgres::Client, slot: &str, version: &str) -> Vec<Read> {
    let rows = pg
        .query(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
                 'proto_version', $2, 'publication_names', 'p', 'messages', 'true')",
            &[&slot, &version],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            let lsn: String = row.get(0);
            let data: Vec<u8> = row.get(1);
            let msg = decode(&data)
                .unwrap_or_else(|e| panic!("proto_version {version}: {e}; bytes {data:?}"));
            Read {
                lsn: lsn.parse().unwrap(),
                data,
                msg,
            }
        })
        .collect()
}

fn kind(m: &PgOutput) -> &'static str {
    match m {
        PgOutput::Begin { .. } => "Begin",
        PgOutput::Commit { .. } => "Commit",
        PgOutput::Origin { .. } => "Origin",
        PgOutput::Relation(_) => "Relation",
        PgOutput::Type { .. } => "Type",
        PgOutput::Insert { .. } => "Insert",
        PgOutput::Update { .. } => "Update",
        PgOutput::Delete { .. } => "Delete",
        PgOutput::Truncate { .. } => "Truncate",
        PgOutput::Message { .. } => "Message",
    }
}

fn t(s: &str) -> Cell {
    Cell::Text(s.as_bytes().to_vec())
}

fn nulls(n: usize) -> impl Iterator<Item = Cell> {
    std::iter::repeat_n(Cell::Null, n)
}

async fn scenario(dbs: &support::TestDbs, pg: &tokio_postgres::Client, slot: &str, origin: &str) {
    for sql in CHANGES {
        pg.batch_execute(sql).await.unwrap();
    }
    // A transaction from a session with a replication origin, as duplex's writers make.
    let tagged = dbs.pg().await;
    tagged
        .batch_execute(&format!(
            "SELECT pg_replication_origin_create('{origin}');
             SELECT pg_replication_origin_session_setup('{origin}');"
        ))
        .await
        .unwrap();
    tagged
        .batch_execute(
            "BEGIN;
             SELECT pg_replication_origin_xact_setup('1/2', now());
             INSERT INTO items (id, name) VALUES (7, 'tagged');
             COMMIT",
        )
        .await
        .unwrap();
    tagged
        .batch_execute("SELECT pg_replication_origin_session_reset()")
        .await
        .unwrap();
    drop(tagged);
    pg.batch_execute("TRUNCATE items, audit RESTART IDENTITY")
        .await
        .unwrap();

    let row = pg
        .query_one(
            "SELECT 'items'::regclass::oid, 'audit'::regclass::oid, 'mood'::regtype::oid,
                    (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 100) i)",
            &[],
        )
        .await
        .unwrap();
    let (items, audit, mood): (u32, u32, u32) = (row.get(0), row.get(1), row.get(2));
    let big: String = row.get(3);

    // Output functions run in this session: make timestamptz text independent of the server.
    pg.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let v1 = peek(pg, slot, "1").await;
    let v2 = peek(pg, slot, "2").await;
    // Without streaming, protocol version 2 sends the very same bytes.
    assert_eq!(
        v1.iter().map(|r| &r.data).collect::<Vec<_>>(),
        v2.iter().map(|r| &r.data).collect::<Vec<_>>()
    );

    let kinds: Vec<&str> = v1.iter().map(|r| kind(&r.msg)).collect();
    #[rustfmt::skip]
    assert_eq!(kinds, [
        "Begin", "Type", "Relation", "Insert", "Relation", "Insert", "Commit",
        "Begin", "Update", "Commit",
        "Begin", "Update", "Commit",
        "Begin", "Update", "Commit",
        "Begin", "Delete", "Commit",
        "Begin", "Delete", "Commit",
        // A non-transactional message is sent when decoded, before the transaction that
        // emitted it (which is sent whole at its commit).
        "Message", "Begin", "Message", "Commit",
        "Begin", "Origin", "Insert", "Commit",
        // TRUNCATE gives the tables new files: their Relation (and Type) are sent again.
        "Begin", "Type", "Relation", "Relation", "Truncate", "Commit",
    ]);
    let m: Vec<&PgOutput> = v1.iter().map(|r| &r.msg).collect();

    // Every transaction: Begin's final LSN is the commit record's LSN, the Commit ends after
    // it, both carry the same commit time, the row's lsn of the Commit is its end LSN, and
    // transactions come in commit order.
    let mut last_end = Lsn(0);
    let mut open: Option<(Lsn, i64)> = None;
    for r in &v1 {
        match r.msg {
            PgOutput::Begin {
                final_lsn,
                commit_time_us,
                ..
            } => {
                assert!(open.is_none());
                assert!(final_lsn >= last_end, "{final_lsn} < {last_end}");
                open = Some((final_lsn, commit_time_us));
            }
            PgOutput::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time_us,
            } => {
                let (final_lsn, begin_time) = open.take().expect("Commit without Begin");
                assert_eq!(flags, 0);
                assert_eq!(commit_lsn, final_lsn);
                assert_eq!(commit_time_us, begin_time);
                assert!(end_lsn > commit_lsn, "{end_lsn} <= {commit_lsn}");
                assert_eq!(r.lsn, end_lsn);
                last_end = end_lsn;
            }
            _ => {}
        }
    }
    assert!(open.is_none());

    assert_eq!(
        *m[1],
        PgOutput::Type {
            oid: mood,
            namespace: "public".into(),
            name: "mood".into()
        }
    );
    let PgOutput::Relation(rel) = m[2] else {
        unreachable!()
    };
    assert_eq!(
        (rel.oid, &*rel.namespace, &*rel.name),
        (items, "public", "items")
    );
    assert_eq!(rel.replica_identity, b'd');
    let columns: Vec<(bool, &str, u32, i32)> = rel
        .columns
        .iter()
        .map(|c| (c.key, &*c.name, c.type_oid, c.type_modifier))
        .collect();
    #[rustfmt::skip]
    assert_eq!(columns, [
        (true, "id", 23, -1),
        (false, "name", 25, -1),
        // numeric(10, 2): (precision << 16 | scale) + VARHDRSZ.
        (false, "price", 1700, (10 << 16 | 2) + 4),
        (false, "active", 16, -1),
        (false, "at", 1184, -1),
        (false, "doc", 3802, -1),
        (false, "raw", 17, -1),
        (false, "big", 25, -1),
        (false, "feeling", mood, -1),
    ]);
    let row42 = |id: &str, name: &str, big: Cell| {
        Tuple(vec![
            t(id),
            t(name),
            t("12.50"),
            t("t"),
            t("2024-05-06 07:08:09.123456+00"),
            t(r#"{"a": [1, 2]}"#),
            t(r"\x00ff10"),
            big,
            t("happy"),
        ])
    };
    assert_eq!(
        *m[3],
        PgOutput::Insert {
            rel: items,
            new: row42("42", "widget", t(&big))
        }
    );
    let PgOutput::Relation(rel) = m[4] else {
        unreachable!()
    };
    assert_eq!(
        (rel.oid, &*rel.name, rel.replica_identity),
        (audit, "audit", b'f')
    );
    // With REPLICA IDENTITY FULL every column is flagged as key.
    assert!(rel.columns.iter().all(|c| c.key));
    assert_eq!(
        *m[5],
        PgOutput::Insert {
            rel: audit,
            new: Tuple(vec![t("1"), t("a")])
        }
    );

    // The TOASTed column was not touched: sent as unchanged, not as its value.
    assert_eq!(
        *m[8],
        PgOutput::Update {
            rel: items,
            old: None,
            new: row42("42", "gadget", Cell::Unchanged)
        }
    );
    // A changed key: the old key, the other columns null.
    assert_eq!(
        *m[11],
        PgOutput::Update {
            rel: items,
            old: Some((
                OldKind::Key,
                Tuple(std::iter::once(t("42")).chain(nulls(8)).collect())
            )),
            new: row42("43", "gadget", Cell::Unchanged)
        }
    );
    assert_eq!(
        *m[14],
        PgOutput::Update {
            rel: audit,
            old: Some((OldKind::Full, Tuple(vec![t("1"), t("a")]))),
            new: Tuple(vec![t("1"), t("b")])
        }
    );
    assert_eq!(
        *m[17],
        PgOutput::Delete {
            rel: audit,
            old: (OldKind::Full, Tuple(vec![t("1"), t("b")]))
        }
    );
    assert_eq!(
        *m[20],
        PgOutput::Delete {
            rel: items,
            old: (
                OldKind::Key,
                Tuple(std::iter::once(t("43")).chain(nulls(8)).collect())
            )
        }
    );

    let (
        PgOutput::Message {
            transactional: false,
            lsn: bye_lsn,
            prefix: bye_prefix,
            content: bye,
        },
        PgOutput::Message {
            transactional: true,
            lsn: hello_lsn,
            prefix: hello_prefix,
            content: hello,
        },
        PgOutput::Commit { commit_lsn, .. },
    ) = (m[22], m[24], m[25])
    else {
        panic!("messages: {:?} {:?} {:?}", m[22], m[24], m[25])
    };
    assert_eq!((&**hello_prefix, &**hello), ("duplex", &b"hello"[..]));
    assert_eq!((&**bye_prefix, &**bye), ("duplex", &b"bye"[..]));
    // A message's LSN is the end of its WAL record: the second one ends where the commit
    // record starts (unless background WAL slipped in between).
    assert!(hello_lsn < bye_lsn && bye_lsn <= commit_lsn);

    assert_eq!(
        *m[27],
        PgOutput::Origin {
            commit_lsn: "1/2".parse().unwrap(),
            name: origin.to_string()
        }
    );
    assert_eq!(
        *m[28],
        PgOutput::Insert {
            rel: items,
            new: Tuple([t("7"), t("tagged")].into_iter().chain(nulls(7)).collect())
        }
    );

    assert!(matches!(m[31], PgOutput::Type { oid, .. } if *oid == mood));
    assert!(matches!(m[32], PgOutput::Relation(r) if r.oid == items));
    assert!(matches!(m[33], PgOutput::Relation(r) if r.oid == audit));
    let PgOutput::Truncate { options, rels } = m[34] else {
        unreachable!()
    };
    // RESTART IDENTITY, no CASCADE.
    assert_eq!(*options, 2);
    let mut rels = rels.clone();
    rels.sort_unstable();
    let mut want = vec![items, audit];
    want.sort_unstable();
    assert_eq!(rels, want);
}
