//! Wires the parts together for each command: config → mapping plan (checked against both live
//! schemas) → pipeline. No processing logic lives here.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::checkpoint;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::mapping::{self, compile::referenced_tables, Plan};
use crate::model::Position;
use crate::sink::postgres as pg;
use crate::source::mysql as my;

/// Loads the mapping set and compiles it against the live schemas of both databases.
pub async fn load_plan(cfg: &Config) -> Result<Plan> {
    let set = mapping::load_dir(&cfg.mappings)?;
    let (sources, targets) = referenced_tables(&set, &cfg.mysql.database, &cfg.postgres.schema);
    let mut conn = my::connect(&cfg.mysql, None, false).await?;
    let mut source_schemas = HashMap::new();
    for name in sources {
        if let Some(t) = my::schema::read_table(&mut conn, &name).await? {
            source_schemas.insert(name, Arc::new(t));
        }
    }
    let _ = conn.disconnect().await;
    let client = pg::connect(&cfg.postgres, "duplex check").await?;
    let mut target_tables = HashMap::new();
    for name in targets {
        if let Some(t) = pg::schema::read_table(&client, &name).await? {
            target_tables.insert(name, t);
        }
    }
    mapping::compile(
        &set,
        &cfg.mysql.database,
        &cfg.postgres.schema,
        &source_schemas,
        &target_tables,
    )
}

/// `duplex setup`: creates duplex's tables and records the current binlog end as the starting
/// checkpoint when there is none yet.
pub async fn setup(cfg: &Config) -> Result<Option<Position>> {
    let client = pg::connect(&cfg.postgres, "duplex setup").await?;
    checkpoint::setup_postgres(&client, &cfg.postgres.duplex_schema).await?;
    let plan = load_plan(cfg).await?;
    if plan.has_reverse() {
        let mode = crate::origin::echo_mode(&client).await?;
        if mode == crate::origin::Echo::Origin {
            crate::origin::create(&client, &crate::origin::origin_name(&cfg.pipeline, 1)).await?;
        }
        setup_publication_and_slot(cfg, &client, &plan, mode).await?;
    }
    let mut my_conn = my::connect(&cfg.mysql, None, true).await?;
    checkpoint::setup_mysql(&mut my_conn, &cfg.mysql.duplex_database).await?;
    let _ = my_conn.disconnect().await;
    let existing = checkpoint::load(
        &client,
        &cfg.postgres.duplex_schema,
        &cfg.pipeline,
        checkpoint::FORWARD,
    )
    .await?;
    if existing.is_some() {
        return Ok(existing);
    }
    let position = match &cfg.mysql.start_position {
        Some(p) => Position::Mysql(p.parse()?),
        None => {
            let mut conn = my::connect(&cfg.mysql, None, false).await?;
            Position::Mysql(my::current_position(&mut conn).await?)
        }
    };
    let stmt = client
        .prepare(&checkpoint::store_sql(&cfg.postgres.duplex_schema))
        .await
        .map_err(|e| Error::from_pg(e, true, "preparing the checkpoint statement"))?;
    checkpoint::store(
        &client,
        &stmt,
        &cfg.pipeline,
        checkpoint::FORWARD,
        &position,
    )
    .await?;
    Ok(Some(position))
}

/// Creates (or updates) the publication of the tables replicated from PostgreSQL, and the slot.
async fn setup_publication_and_slot(
    cfg: &Config,
    client: &tokio_postgres::Client,
    plan: &Plan,
    mode: crate::origin::Echo,
) -> Result<()> {
    let name = crate::pipeline::slot_name(&cfg.pipeline);
    let mut tables: Vec<String> = plan.reverse.iter().map(|r| r.source.pg_quoted()).collect();
    // The reverse direction's heartbeat travels through the slot like any change.
    tables.push(crate::heartbeat::source_table(crate::pipeline::Way::Reverse, cfg).pg_quoted());
    // The marker rule needs the checkpoint table's changes in the stream.
    if mode == crate::origin::Echo::Marker {
        tables.push(
            crate::model::TableName::new(cfg.postgres.duplex_schema.clone(), checkpoint::TABLE)
                .pg_quoted(),
        );
    }
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(|e| Error::from_pg(e, true, "looking up the publication"))?
        .is_some();
    let sql = if exists {
        format!(
            "ALTER PUBLICATION {} SET TABLE {}",
            crate::model::pg_ident(&name),
            tables.join(", ")
        )
    } else {
        format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            crate::model::pg_ident(&name),
            tables.join(", ")
        )
    };
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| Error::from_pg(e, true, &format!("creating publication {name}")))?;
    let slot_exists = client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|e| Error::from_pg(e, true, "looking up the replication slot"))?
        .is_some();
    if !slot_exists {
        let mut conn = crate::source::postgres::stream::ReplicationConn::connect(
            &cfg.postgres,
            "duplex setup",
        )
        .await?;
        let at = conn.create_slot(&name).await?;
        tracing::info!(slot = %name, at = %at, "replication slot created");
    }
    Ok(())
}

/// `duplex teardown`: drops the replication slot (so PostgreSQL stops keeping WAL for it), the
/// publication and the replication origin. duplex's tables and checkpoints stay.
pub async fn teardown(cfg: &Config) -> Result<Vec<String>> {
    let name = crate::pipeline::slot_name(&cfg.pipeline);
    let client = pg::connect(&cfg.postgres, "duplex teardown").await?;
    let mut done = Vec::new();
    let mut backoff = crate::pipeline::Backoff::default();
    for attempt in 0.. {
        let slot = client
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(|e| Error::from_pg(e, true, "looking up the replication slot"))?;
        match slot {
            None => break,
            Some(_) => {
                let mut conn = crate::source::postgres::stream::ReplicationConn::connect(
                    &cfg.postgres,
                    "duplex teardown",
                )
                .await?;
                match conn.drop_slot(&name).await {
                    Ok(()) => {
                        done.push(format!("dropped replication slot {name}"));
                        break;
                    }
                    // Still held by a reader that is shutting down.
                    Err(e) if e.is_transient() && attempt < 20 => {
                        tokio::time::sleep(backoff.next_delay()).await
                    }
                    Err(e) => return Err(e.context("stop `duplex run` before teardown")),
                }
            }
        }
    }
    let dropped = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(|e| Error::from_pg(e, true, "looking up the publication"))?
        .is_some();
    if dropped {
        client
            .batch_execute(&format!(
                "DROP PUBLICATION {}",
                crate::model::pg_ident(&name)
            ))
            .await
            .map_err(|e| Error::from_pg(e, true, "dropping the publication"))?;
        done.push(format!("dropped publication {name}"));
    }
    let origin = crate::origin::origin_name(&cfg.pipeline, 1);
    if crate::origin::echo_mode(&client).await? == crate::origin::Echo::Origin {
        crate::origin::drop(&client, &origin).await?;
        done.push(format!(
            "dropped replication origin {origin} (if it existed)"
        ));
    } else {
        done.push("no replication origin to drop (this role uses the marker rule)".to_string());
    }
    Ok(done)
}

/// One line of `duplex check`.
#[derive(Debug, Clone)]
pub struct CheckLine {
    pub ok: bool,
    pub what: String,
    pub fix: String,
}

/// `duplex check`: the configuration, server settings and privileges, and the mapping set
/// compiled against both live schemas — the same validation `run` does.
pub async fn check(cfg: &Config) -> Vec<CheckLine> {
    let mut out = vec![CheckLine {
        ok: true,
        what: format!("config {} is valid", cfg.path.display()),
        fix: String::new(),
    }];
    if let Some(hint) = pooler_port(cfg.postgres.port) {
        out.push(CheckLine {
            ok: false,
            what: format!("PostgreSQL: port {} {hint}", cfg.postgres.port),
            fix: DIRECT_CONNECTION.into(),
        });
    }
    match my::connect(&cfg.mysql, None, false).await {
        Ok(mut conn) => {
            use mysql_async::prelude::Queryable;
            let version: Option<(String, String)> = conn
                .query_first("SHOW SESSION STATUS LIKE 'Ssl_version'")
                .await
                .ok()
                .flatten();
            out.push(tls_line(
                "MySQL",
                &cfg.mysql.tls,
                version.map(|(_, v)| v).filter(|v| !v.is_empty()),
            ));
            match my::check_server(&mut conn).await {
                Ok(findings) => out.extend(findings.into_iter().map(|f| CheckLine {
                    ok: f.ok,
                    what: format!("MySQL: {}", f.what),
                    fix: f.fix,
                })),
                Err(e) => out.push(CheckLine {
                    ok: false,
                    what: format!("MySQL: {e}"),
                    fix: "grant the duplex user access to server variables and SHOW GRANTS".into(),
                }),
            }
            let _ = conn.disconnect().await;
            // The initial copy's read view and binlog position, taken the way `snapshot` does.
            out.push(match crate::snapshot::mysql::MysqlSnapshot::open(&cfg.mysql).await {
                Ok(snap) => {
                    let at = snap.position.to_string();
                    snap.close().await;
                    CheckLine {
                        ok: true,
                        what: format!("MySQL: a consistent snapshot with its binlog position ({at}) for the initial copy"),
                        fix: String::new(),
                    }
                }
                Err(e) => CheckLine {
                    ok: false,
                    what: format!("MySQL: the initial copy cannot take its snapshot: {e}"),
                    fix: format!(
                        "MySQL 8: GRANT BACKUP_ADMIN ON *.* TO '{}'@'%'; MariaDB: start the server with log_bin",
                        cfg.mysql.user
                    ),
                },
            });
        }
        Err(e) => out.push(CheckLine {
            ok: false,
            what: format!("MySQL: {e}"),
            fix: connect_fix(&e, "mysql", "host, port, user and password"),
        }),
    }
    match pg::connect(&cfg.postgres, "duplex check").await {
        Ok(client) => {
            let version: Option<String> = client
                .query_opt(
                    "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
                    &[],
                )
                .await
                .ok()
                .flatten()
                .map(|r| r.get(0));
            out.push(tls_line("PostgreSQL", &cfg.postgres.tls, version));
            let present = client
                .query_opt(
                    "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'checkpoint'",
                    &[&cfg.postgres.duplex_schema],
                )
                .await
                .ok()
                .flatten()
                .is_some();
            out.push(CheckLine {
                ok: present,
                what: format!(
                    "PostgreSQL: duplex's tables in schema {}",
                    cfg.postgres.duplex_schema
                ),
                fix: format!("run `duplex setup -c {}`", cfg.path.display()),
            });
        }
        Err(e) => out.push(CheckLine {
            ok: false,
            what: format!("PostgreSQL: {e}"),
            fix: match pooler_failure(e.message()) {
                Some(_) => DIRECT_CONNECTION.into(),
                None => connect_fix(&e, "postgres", "host, port, user, password and dbname"),
            },
        }),
    }
    match load_plan(cfg).await {
        Ok(plan) => {
            out.push(CheckLine {
                ok: true,
                what: format!(
                    "mappings in {}: {} table(s) compiled against both schemas",
                    cfg.mappings.display(),
                    plan.tables.len()
                ),
                fix: String::new(),
            });
            if plan.has_reverse() {
                out.extend(check_reverse(cfg, &plan).await);
            }
        }
        Err(e) if e.kind() == ErrorKind::Mapping => {
            for line in e.message().lines() {
                out.push(CheckLine {
                    ok: false,
                    what: format!("mapping: {line}"),
                    fix: "edit the mapping file at that line, or the table it names".into(),
                });
            }
        }
        Err(e) => out.push(CheckLine {
            ok: false,
            what: format!("mappings: {e}"),
            fix: "see the message".into(),
        }),
    }
    out
}

const DIRECT_CONNECTION: &str = "connect [postgres] to the database directly: on Supabase the \"Direct connection\" host db.<project>.supabase.co, port 5432 (or the session pooler on port 5432), not the transaction pooler on 6543";

/// Why a PostgreSQL port is a connection pooler's; None for any other port.
pub fn pooler_port(port: u16) -> Option<&'static str> {
    (port == 6543).then_some("is the well-known port of Supabase's transaction pooler (Supavisor): duplex needs a whole session (its pipeline lock, prepared statements) and a replication connection, which a transaction pooler cannot carry")
}

/// Why a failed connection looks like a connection pooler's answer; None when nothing says so.
pub fn pooler_failure(m: &str) -> Option<String> {
    let pooler = [
        "unsupported startup parameter",
        "Tenant or user not found",
        "unsupported pkt type",
        "pgbouncer",
        "supavisor",
        "prepared statement \"s",
    ];
    pooler
        .iter()
        .any(|p| m.contains(p))
        .then(|| format!("answers like a connection pooler (PgBouncer, Supavisor): {m}"))
}

/// The fix line of a failed connection: TLS settings for a TLS failure, else the address.
fn connect_fix(e: &Error, section: &str, what: &str) -> String {
    if e.message().contains("TLS: ") {
        format!("see the message; [{section}] sslmode, sslrootcert, sslcert and sslkey set TLS")
    } else {
        format!("check [{section}] {what} in the config, and that the server is up")
    }
}

/// How a side's connection is protected.
fn tls_line(side: &str, tls: &crate::tls::Tls, version: Option<String>) -> CheckLine {
    let mode = tls.mode.as_str();
    match version {
        Some(v) => CheckLine {
            ok: true,
            what: format!(
                "{side}: connection encrypted ({v}, sslmode {mode}{})",
                match tls.mode {
                    crate::tls::SslMode::VerifyFull => ": certificate and host name verified",
                    crate::tls::SslMode::VerifyCa => ": certificate verified, host name not",
                    _ => ": the server's certificate is not verified",
                }
            ),
            fix: String::new(),
        },
        None => CheckLine {
            // Unencrypted is a choice under disable (loopback's default) and prefer; the
            // other modes cannot get here without TLS.
            ok: true,
            what: format!("{side}: connection not encrypted (sslmode {mode})"),
            fix: String::new(),
        },
    }
}

/// What replicating from PostgreSQL needs: logical WAL, a role with REPLICATION, the origin
/// functions (echo suppression), and the publication and slot `duplex setup` creates.
async fn check_reverse(cfg: &Config, plan: &Plan) -> Vec<CheckLine> {
    let mut out = Vec::new();
    let client = match pg::connect(&cfg.postgres, "duplex check").await {
        Ok(c) => c,
        Err(_) => return out,
    };
    let one = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .map(|r| r.get::<_, String>(0))
                .unwrap_or_else(|e| format!("(cannot read: {e})"))
        }
    };
    // The replication connection itself: a pooler in between fails here in its own ways.
    let probe = async {
        let mut conn = crate::source::postgres::stream::ReplicationConn::connect(
            &cfg.postgres,
            "duplex check",
        )
        .await?;
        conn.identify_system().await
    };
    match probe.await {
        Ok(id) => out.push(CheckLine {
            ok: true,
            what: format!(
                "PostgreSQL: a replication connection works (system {}, timeline {})",
                id.system_id, id.timeline
            ),
            fix: String::new(),
        }),
        Err(e) => {
            let text = e.to_string();
            out.push(match pooler_failure(&text) {
                Some(hint) => CheckLine {
                    ok: false,
                    what: format!(
                        "PostgreSQL at {}:{} {hint}",
                        cfg.postgres.host, cfg.postgres.port
                    ),
                    fix: DIRECT_CONNECTION.into(),
                },
                None => CheckLine {
                    ok: false,
                    what: format!("PostgreSQL: the replication connection fails: {text}"),
                    fix: format!(
                        "ALTER ROLE {} WITH REPLICATION, and allow it in pg_hba.conf (a line for database \"replication\" is not needed for logical replication, but one matching the database is)",
                        cfg.postgres.user
                    ),
                },
            });
        }
    }
    // Row-level security that could make the copy of a table read fewer rows than it has.
    let sources: Vec<crate::model::TableName> =
        plan.reverse.iter().map(|r| r.source.clone()).collect();
    match crate::snapshot::postgres::rls_hidden(&client, &sources).await {
        Ok(hidden) if hidden.is_empty() => out.push(CheckLine {
            ok: true,
            what: format!(
                "PostgreSQL: role {} sees every row of the {} table(s) replicated from PostgreSQL (no row-level security in the way)",
                cfg.postgres.user,
                sources.len()
            ),
            fix: String::new(),
        }),
        Ok(hidden) => out.push(CheckLine {
            ok: false,
            what: format!(
                "PostgreSQL: {}",
                crate::snapshot::postgres::rls_message(&hidden, &cfg.postgres.user)
            ),
            fix: format!(
                "ALTER ROLE {} BYPASSRLS (as a superuser), or a policy FOR SELECT TO {} USING (true) on each table named",
                cfg.postgres.user, cfg.postgres.user
            ),
        }),
        Err(e) => out.push(CheckLine {
            ok: false,
            what: format!("PostgreSQL: {e}"),
            fix: "see the message".into(),
        }),
    }
    let wal = one("SELECT current_setting('wal_level')").await;
    out.push(CheckLine {
        ok: wal == "logical",
        what: format!(
            "PostgreSQL: wal_level = {wal} (needs logical for tables mapped reverse/both)"
        ),
        fix: "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL".into(),
    });
    let role =
        one("SELECT (rolreplication OR rolsuper)::text FROM pg_roles WHERE rolname = current_user")
            .await;
    out.push(CheckLine {
        ok: role == "true",
        what: "PostgreSQL: the role has REPLICATION (reads the slot)".into(),
        fix: format!("ALTER ROLE {} WITH REPLICATION", cfg.postgres.user),
    });
    match crate::origin::echo_mode(&client).await {
        Ok(crate::origin::Echo::Origin) => out.push(CheckLine {
            ok: true,
            what: "PostgreSQL: echo suppression by replication origin (pg_replication_origin_* executable)".into(),
            fix: String::new(),
        }),
        Ok(crate::origin::Echo::Marker) => out.push(CheckLine {
            ok: true,
            what: format!(
                "PostgreSQL: echo suppression by the checkpoint-row marker: this role may not execute \
                 pg_replication_origin_*, so {}.checkpoint is published and written first in every transaction",
                cfg.postgres.duplex_schema
            ),
            fix: String::new(),
        }),
        Err(e) => out.push(CheckLine {
            ok: false,
            what: format!("PostgreSQL: {e}"),
            fix: "see the message".into(),
        }),
    }
    // Copying tables mapped `reverse` takes a temporary slot of its own.
    let reverse_only = plan
        .tables
        .iter()
        .any(|t| t.direction == crate::mapping::Direction::Reverse);
    if reverse_only {
        let free = one(
            "SELECT (current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots))::text",
        )
        .await;
        out.push(CheckLine {
            ok: free.parse::<i64>().is_ok_and(|n| n >= 1),
            what: format!(
                "PostgreSQL: {free} free replication slot(s) (the initial copy of tables mapped reverse takes a temporary one)"
            ),
            fix: "raise max_replication_slots (and max_wal_senders) and restart PostgreSQL".into(),
        });
    }
    let name = crate::pipeline::slot_name(&cfg.pipeline);
    let published: Vec<String> = client
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1",
            &[&name],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default();
    // The reverse direction's heartbeat (its lag) travels through the publication too.
    let heartbeat = crate::heartbeat::source_table(crate::pipeline::Way::Reverse, cfg);
    let missing: Vec<String> = plan
        .reverse
        .iter()
        .map(|r| r.source.to_string())
        .chain(std::iter::once(heartbeat.to_string()))
        .filter(|t| !published.contains(t))
        .collect();
    out.push(CheckLine {
        ok: missing.is_empty(),
        what: if missing.is_empty() {
            format!(
                "PostgreSQL: publication {name} covers the {} table(s) replicated from PostgreSQL",
                plan.reverse.len()
            )
        } else {
            format!(
                "PostgreSQL: publication {name} lacks {}",
                missing.join(", ")
            )
        },
        fix: format!("run `duplex setup -c {}`", cfg.path.display()),
    });
    let slot = client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .ok()
        .flatten()
        .is_some();
    out.push(CheckLine {
        ok: slot,
        what: format!("PostgreSQL: replication slot {name}"),
        fix: format!("run `duplex setup -c {}`", cfg.path.display()),
    });
    out
}

/// `duplex run`: replicates until SIGTERM / SIGINT.
pub async fn run(cfg: &Config) -> Result<()> {
    // First of all, so that a SIGTERM during start-up is a clean stop, not the default death.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    stop_on_signal(
        stop_tx.clone(),
        true,
        "shutting down: finishing the transaction in flight",
    );
    crate::telemetry::install(cfg.metrics_listen, cfg.ready_max_lag).await?;
    crate::telemetry::live().set_pipeline(&cfg.pipeline);
    refuse_unsafe_source(cfg).await?;
    let mut backoff = crate::pipeline::Backoff::default();
    let plan = loop {
        if *stop_rx.borrow() {
            return Ok(());
        }
        match load_plan(cfg).await {
            Ok(p) => break Arc::new(p),
            Err(e) if e.is_transient() => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "cannot read the schemas yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stop_rx.changed() => {}
                }
            }
            Err(e) => return Err(e),
        }
    };
    tracing::info!(
        pipeline = %cfg.pipeline,
        tables = plan.tables.len(),
        metrics = %cfg.metrics_listen,
        "mappings compiled"
    );
    let _lock = match pipeline_lock(cfg, None, stop_rx.clone()).await {
        Ok(l) => l,
        Err(_) if *stop_rx.borrow() => return Ok(()),
        Err(e) => return Err(e),
    };
    use crate::pipeline::{run as run_way, Way};
    let live = crate::telemetry::live();
    live.activate(Way::Forward);
    crate::heartbeat::spawn(Way::Forward, cfg, stop_rx.clone());
    if plan.has_reverse() {
        live.activate(Way::Reverse);
        crate::heartbeat::spawn(Way::Reverse, cfg, stop_rx.clone());
    }
    crate::telemetry::observe::spawn(cfg, plan.has_reverse(), stop_rx.clone());
    let plans = Arc::new(arc_swap::ArcSwap::new(plan.clone()));
    let reload_rx = reload_on_sighup(cfg, plans.clone());
    if cfg.snapshot_on_start() {
        for way in [Way::Forward, Way::Reverse] {
            if !crate::pipeline::copy_new_tables(way, cfg, plan.clone(), stop_rx.clone()).await? {
                return Ok(());
            }
        }
    }
    if plan.reverse.is_empty() {
        return run_way(Way::Forward, cfg, plans, stop_rx, reload_rx).await;
    }
    // Both directions at once; a definite failure of one stops the other.
    let forward = run_way(
        Way::Forward,
        cfg,
        plans.clone(),
        stop_rx.clone(),
        reload_rx.clone(),
    );
    let reverse = run_way(Way::Reverse, cfg, plans, stop_rx, reload_rx);
    tokio::pin!(forward, reverse);
    tokio::select! {
        r = &mut forward => {
            if r.is_err() {
                let _ = stop_tx.send(true);
            }
            let other = reverse.await;
            r.and(other)
        }
        r = &mut reverse => {
            if r.is_err() {
                let _ = stop_tx.send(true);
            }
            let other = forward.await;
            r.and(other)
        }
    }
}

/// `duplex snapshot`: copies the tables that need it (or the one named), then exits.
pub async fn snapshot(
    cfg: &Config,
    request: &crate::snapshot::Request,
) -> Result<Vec<crate::snapshot::Report>> {
    let plan = Arc::new(load_plan(cfg).await?);
    let (stop_tx, stop_rx) = watch::channel(false);
    stop_on_signal(
        Arc::new(stop_tx),
        false,
        "stopping after the chunk in flight",
    );
    let _lock = pipeline_lock(cfg, Some(LOCK_WAIT), stop_rx.clone()).await?;
    let mut reports = Vec::new();
    for way in [crate::pipeline::Way::Forward, crate::pipeline::Way::Reverse] {
        reports
            .extend(crate::snapshot::run(way, cfg, plan.clone(), request, stop_rx.clone()).await?);
        if *stop_rx.borrow() {
            break;
        }
    }
    Ok(reports)
}

/// How long `duplex snapshot` waits for a running pipeline's lock before giving up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// One process per pipeline: a PostgreSQL session lock held for the life of the returned
/// connection. `run` waits for it (a second instance is a standby); `snapshot` gives up after
/// `wait`.
async fn pipeline_lock(
    cfg: &Config,
    wait: Option<std::time::Duration>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio_postgres::Client> {
    let started = std::time::Instant::now();
    let mut said = false;
    let mut backoff = crate::pipeline::Backoff::default();
    // One session, kept while waiting; a new one only after an error.
    let mut session: Option<tokio_postgres::Client> = None;
    loop {
        let attempt = async {
            let client = match session.take() {
                Some(c) => c,
                None => {
                    pg::connect(&cfg.postgres, &format!("duplex {} lock", cfg.pipeline)).await?
                }
            };
            let row = client
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtextextended('duplex pipeline ' || $1, 0))",
                    &[&cfg.pipeline],
                )
                .await
                .map_err(|e| Error::from_pg(e, true, "taking the pipeline lock"))?;
            Ok::<_, Error>((row.get::<_, bool>(0), client))
        }
        .await;
        let delay = match attempt {
            Ok((true, client)) => return Ok(client),
            Ok((false, client)) => {
                session = Some(client);
                if wait.is_some_and(|w| started.elapsed() >= w) {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "pipeline {} is in use by another duplex process (`duplex run` or `duplex snapshot`); stop it first",
                            cfg.pipeline
                        ),
                    ));
                }
                if !said {
                    said = true;
                    tracing::warn!(pipeline = %cfg.pipeline, "another duplex process holds this pipeline; waiting for it to stop");
                }
                std::time::Duration::from_millis(500)
            }
            Err(e) if e.is_transient() => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "PostgreSQL not reachable yet");
                d
            }
            Err(e) => return Err(e),
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return Err(Error::new(ErrorKind::Config, "stopped while waiting for the pipeline lock")),
        }
    }
}

/// Stops before replicating from a server whose settings would lose or corrupt changes.
async fn refuse_unsafe_source(cfg: &Config) -> Result<()> {
    let mut backoff = crate::pipeline::Backoff::default();
    let mut conn = loop {
        match my::connect(&cfg.mysql, None, false).await {
            Ok(c) => break c,
            Err(e) if e.is_transient() => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "MySQL not reachable yet");
                tokio::time::sleep(d).await;
            }
            Err(e) => return Err(e),
        }
    };
    let findings = my::check_server(&mut conn).await?;
    let _ = conn.disconnect().await;
    let bad: Vec<String> = findings
        .iter()
        .filter(|f| !f.ok)
        .map(|f| format!("{} — fix: {}", f.what, f.fix))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::ServerSetting,
            format!(
                "refusing to replicate from this MySQL server:\n  {}",
                bad.join("\n  ")
            ),
        ))
    }
}

/// SIGHUP re-reads and re-checks the mapping set: a valid one replaces the running plan (each
/// direction switches after its transaction in flight; the returned counter announces it), an
/// invalid one is refused with its errors and the running plan stays.
fn reload_on_sighup(cfg: &Config, plans: Arc<arc_swap::ArcSwap<Plan>>) -> watch::Receiver<u64> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = watch::channel(0u64);
    let cfg = cfg.clone();
    let hup = signal(SignalKind::hangup());
    tokio::spawn(async move {
        let Ok(mut hup) = hup else { return };
        let mut reloads = 0;
        while hup.recv().await.is_some() {
            tracing::info!(mappings = %cfg.mappings.display(), "SIGHUP: reloading the mappings");
            match load_plan(&cfg).await {
                Ok(plan) => {
                    let tables = plan.tables.len();
                    plans.store(Arc::new(plan));
                    reloads += 1;
                    let _ = tx.send(reloads);
                    tracing::info!(tables, "mappings reloaded; each direction switches after its transaction in flight");
                }
                Err(e) => {
                    tracing::error!("mapping reload refused, the running mappings stay:\n{e}");
                }
            }
        }
    });
    rx
}

/// Sends `true` on `stop` at SIGTERM or Ctrl-C, logging `what`. The handlers are installed
/// before this returns, so from then on these signals never end the process by their default
/// action. SIGHUP (which would) is caught too: `run` reloads the mappings on it
/// (`hup_reloads`), other commands ignore it.
fn stop_on_signal(stop: Arc<watch::Sender<bool>>, hup_reloads: bool, what: &'static str) {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let hup = signal(SignalKind::hangup()).ok();
    let int = tokio::signal::ctrl_c();
    tokio::spawn(async move {
        if let Ok(term) = term {
            wait_for_signal(term, hup, int, hup_reloads).await;
            tracing::info!("{what}");
            let _ = stop.send(true);
        }
    });
}

async fn wait_for_signal(
    mut term: tokio::signal::unix::Signal,
    mut hup: Option<tokio::signal::unix::Signal>,
    int: impl std::future::Future<Output = std::io::Result<()>>,
    hup_reloads: bool,
) {
    tokio::pin!(int);
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = &mut int => return,
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                if !hup_reloads {
                    tracing::warn!("SIGHUP ignored: only `duplex run` reloads mappings");
                }
            }
        }
    }
}

/// `duplex status`: what the databases record for the pipeline, and what its running process
/// (asked at the metrics listener) says it is doing.
#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    pub pipeline: String,
    /// The running process's own account, when one answers.
    pub process: Option<crate::telemetry::live::Status>,
    /// Why no process answered.
    pub process_unreachable: Option<String>,
    pub record: crate::telemetry::observe::Record,
}

pub async fn status(cfg: &Config) -> Result<StatusReport> {
    let reverse = mapping::load_dir(&cfg.mappings)?.has_reverse();
    let asked = crate::telemetry::http::get(
        cfg.metrics_listen,
        "/status",
        std::time::Duration::from_secs(3),
    );
    let (asked, record) = tokio::join!(asked, crate::telemetry::observe::record(cfg, reverse));
    let (process, process_unreachable) = match asked {
        Ok((200, body)) => match serde_json::from_str(&body) {
            Ok(s) => (Some(s), None),
            Err(e) => (
                None,
                Some(format!(
                    "{} answered, but not with duplex's status: {e}",
                    cfg.metrics_listen
                )),
            ),
        },
        Ok((code, _)) => (
            None,
            Some(format!(
                "{} answered HTTP {code} to /status: not a duplex of this version",
                cfg.metrics_listen
            )),
        ),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(StatusReport {
        pipeline: cfg.pipeline.clone(),
        process,
        process_unreachable,
        record,
    })
}

/// Lines of cells as a left-aligned table.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn time_of(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| us.to_string())
}

fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// `duplex status` as a table.
pub fn render_status(r: &StatusReport) -> String {
    let mut out = format!("pipeline {}\n", r.pipeline);
    match (&r.process, &r.process_unreachable) {
        (Some(p), _) => {
            out.push_str(&format!(
                "process  pid {} running since {}: {}\n",
                p.pid,
                time_of(p.started_us),
                if p.ready {
                    "ready".to_string()
                } else {
                    format!("NOT READY ({})", p.not_ready.join("; "))
                }
            ));
        }
        (None, why) => out.push_str(&format!(
            "process  none answers: {} — state stopped\n",
            why.as_deref().unwrap_or("?")
        )),
    }
    out.push('\n');
    let mut rows = vec![vec![
        "direction".to_string(),
        "state".into(),
        "lag".into(),
        "position (checkpoint)".into(),
        "dead letters".into(),
    ]];
    let dirs = std::iter::once(&r.record.forward).chain(r.record.reverse.as_ref());
    for d in dirs {
        let live = r
            .process
            .as_ref()
            .and_then(|p| p.directions.iter().find(|x| x.direction == d.direction));
        let state = match live {
            Some(l) if l.state == crate::telemetry::State::Retrying => format!(
                "retrying (attempt {}{})",
                l.retry_attempt,
                l.retry_at_us
                    .map(|at| format!(
                        ", next in {}",
                        seconds(((at - crate::telemetry::live::now_us()).max(0)) as f64 / 1e6)
                    ))
                    .unwrap_or_default()
            ),
            Some(l) => l.state.as_str().to_string(),
            None => "stopped".into(),
        };
        let lag = live
            .and_then(|l| l.lag_seconds)
            .map(seconds)
            .unwrap_or_else(|| "-".into());
        let position = live
            .and_then(|l| l.position.clone())
            .or_else(|| d.position.clone())
            .unwrap_or_else(|| "(none yet)".into());
        let letters = match (d.dead_letters_unresolved, d.dead_letters_total) {
            (Some(u), Some(t)) => format!("{u} unresolved of {t}"),
            _ => "?".into(),
        };
        rows.push(vec![d.direction.to_string(), state, lag, position, letters]);
    }
    out.push_str(&table(&rows));
    if let Some(p) = &r.process {
        for d in &p.directions {
            if let Some(e) = &d.last_error {
                out.push_str(&format!(
                    "last error {} at {} [{}]: {}\n",
                    d.direction,
                    time_of(e.at_us),
                    e.kind,
                    e.message
                ));
            }
        }
    }
    for d in std::iter::once(&r.record.forward).chain(r.record.reverse.as_ref()) {
        if !d.snapshot_pending.is_empty() {
            out.push_str(&format!(
                "snapshot {} pending: {}\n",
                d.direction,
                d.snapshot_pending.join(", ")
            ));
        }
    }
    let rec = &r.record;
    if let Some(newest) = &rec.binlog_newest {
        let mut line = format!("binlog   server's newest {newest}");
        if let Some(n) = rec.binlog_files_behind {
            line.push_str(&format!(", checkpoint {n} file(s) behind"));
        }
        match (
            rec.binlog_expiry_seconds,
            rec.binlog_expiry_remaining_seconds,
        ) {
            (Some(0), _) => line.push_str("; binlog expiry off"),
            (_, Some(left)) => line.push_str(&format!(
                "; expiry purges the checkpoint's file in about {}",
                seconds(left.max(0.0))
            )),
            _ => {}
        }
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(slot) = &rec.slot {
        out.push_str(&match (rec.slot_active, rec.slot_retained_wal_bytes) {
            (Some(active), Some(bytes)) => format!(
                "slot     {slot}: {}, retains {:.1} MB of WAL\n",
                if active { "active" } else { "inactive" },
                bytes as f64 / 1e6
            ),
            _ => format!("slot     {slot}: missing (run `duplex setup`)\n"),
        });
    }
    for why in &rec.unreadable {
        out.push_str(&format!("cannot read {why}\n"));
    }
    out
}

/// `duplex dlq list` as a table.
pub fn render_letters(letters: &[crate::dlq::Letter]) -> String {
    if letters.is_empty() {
        return "no dead letters\n".into();
    }
    let mut rows = vec![vec![
        "id".to_string(),
        "direction".into(),
        "table".into(),
        "op".into(),
        "attempts".into(),
        "last attempt".into(),
        "state".into(),
        "reason".into(),
    ]];
    for l in letters {
        let mut reason: String = l.reason.chars().take(100).collect();
        if l.reason.chars().count() > 100 {
            reason.push('…');
        }
        rows.push(vec![
            l.id.to_string(),
            l.direction.clone(),
            l.target_table.clone(),
            l.op.clone(),
            l.attempts.to_string(),
            l.last_attempt.chars().take(19).collect(),
            if l.resolved { "resolved" } else { "open" }.into(),
            reason.replace('\n', " "),
        ]);
    }
    table(&rows)
}

/// `duplex dlq show` in full.
pub fn render_letter(l: &crate::dlq::Letter) -> String {
    format!(
        "id            {}\ndirection     {}\nsource table  {}\ntarget table  {}\nop            {}\nposition      {}\ntransaction   {}\nfirst attempt {}\nlast attempt  {}\nattempts      {}\nstate         {}\nreason        {}\nrow\n{}\n",
        l.id,
        l.direction,
        l.source_table,
        l.target_table,
        l.op,
        l.position,
        l.txn_id,
        l.first_attempt,
        l.last_attempt,
        l.attempts,
        if l.resolved { "resolved" } else { "open" },
        l.reason,
        serde_json::to_string_pretty(&l.row).unwrap_or_default()
    )
}
