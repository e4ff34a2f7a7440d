//! `duplex check`: the configuration, both servers' settings and privileges, TLS, and the
//! mapping set compiled against both live schemas — the same validation `run` does — each as a
//! line with the fix when it fails.

use std::process::ExitCode;

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::mapping::{load_plan, Plan};

/// Runs `duplex check`, prints its lines; success when every check passed.
pub async fn main(cfg: &Config) -> ExitCode {
    let lines = check(cfg).await;
    print_lines(&lines)
}

/// Runs `duplex check --offline`: the configuration (read already) and the whole mapping set,
/// compiled without any server ([`crate::mapping::offline`]).
pub fn offline(cfg: &Config) -> ExitCode {
    let mut lines = vec![CheckLine {
        ok: true,
        what: format!("config {} is valid", cfg.path.display()),
        fix: String::new(),
    }];
    let compiled = crate::mapping::load_dir(&cfg.mappings).and_then(|set| {
        crate::mapping::offline::compile_offline(&set, &cfg.mysql.database, &cfg.postgres.schema)
    });
    match compiled {
        Ok(plan) => lines.push(CheckLine {
            ok: true,
            what: format!(
                "mappings in {}: {} table(s) compiled offline (maps, transforms, look-ups, pivots, keys, directions; that the tables and columns exist and their types fit is for `duplex check` with the servers)",
                cfg.mappings.display(),
                plan.tables.len()
            ),
            fix: String::new(),
        }),
        Err(e) => {
            for line in e.message().lines() {
                lines.push(CheckLine {
                    ok: false,
                    what: format!("mapping: {line}"),
                    fix: "edit the mapping file at that line".into(),
                });
            }
        }
    }
    print_lines(&lines)
}

/// Prints check lines and the summary; success when every line passed.
fn print_lines(lines: &[CheckLine]) -> ExitCode {
    let mut out = String::new();
    let failed = lines.iter().filter(|l| !l.ok).count();
    for l in lines {
        if l.ok {
            out.push_str(&format!("ok    {}\n", l.what));
        } else {
            out.push_str(&format!("FAIL  {}\n      fix: {}\n", l.what, l.fix));
        }
    }
    if failed == 0 {
        out.push_str(&format!("all {} checks passed\n", lines.len()));
    } else {
        out.push_str(&format!("{failed} of {} checks failed\n", lines.len()));
    }
    super::print(&out);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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
    out.extend(check_mysql(cfg).await);
    out.extend(check_postgres(cfg).await);
    out.extend(check_mappings(cfg).await);
    out
}

/// MySQL: the connection and its TLS, the server settings CDC needs, and the initial copy's
/// consistent snapshot.
async fn check_mysql(cfg: &Config) -> Vec<CheckLine> {
    let mut out = Vec::new();
    match crate::connect::mysql(&cfg.mysql, None, false).await {
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
            let account = super::grants::account(&mut conn, cfg).await;
            match crate::source::mysql::check_server(&mut conn).await {
                Ok(findings) => out.extend(findings.into_iter().map(|f| CheckLine {
                    ok: f.ok,
                    what: format!("MySQL: {}", f.what),
                    fix: f.fix.replace("<duplex user>", &account),
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
    out
}

/// PostgreSQL: the connection and its TLS, and duplex's tables.
async fn check_postgres(cfg: &Config) -> Vec<CheckLine> {
    let mut out = Vec::new();
    match crate::connect::postgres(&cfg.postgres, "duplex check").await {
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
    out
}

/// The mapping set compiled against both live schemas, and what the way back needs.
async fn check_mappings(cfg: &Config) -> Vec<CheckLine> {
    let mut out = Vec::new();
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
            out.extend(check_privileges(cfg, &plan).await);
            if plan.has_reverse() {
                out.extend(check_reverse(cfg, &plan).await);
            }
        }
        Err(e) if e.kind() == ErrorKind::Mapping => {
            let mut account = None;
            for line in e.message().lines() {
                let fix = match absent_source(line) {
                    // MySQL shows a table only to an account with a privilege on it.
                    Some(table) => {
                        if account.is_none() {
                            account =
                                Some(match crate::connect::mysql(&cfg.mysql, None, false).await {
                                    Ok(mut conn) => {
                                        let a = super::grants::account(&mut conn, cfg).await;
                                        let _ = conn.disconnect().await;
                                        a
                                    }
                                    Err(_) => format!("'{}'@'%'", cfg.mysql.user),
                                });
                        }
                        format!(
                            "create the table, or, when it exists, let duplex see it: GRANT SELECT ON {table} TO {};",
                            account.as_deref().unwrap_or_default()
                        )
                    }
                    None => "edit the mapping file at that line, or the table it names".into(),
                };
                out.push(CheckLine {
                    ok: false,
                    what: format!("mapping: {line}"),
                    fix,
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

/// The MySQL table (back-quoted) of a mapping error saying a source table does not exist.
fn absent_source(line: &str) -> Option<String> {
    let rest = line.split("source table ").nth(1)?;
    let name = rest.strip_suffix(" does not exist in MySQL")?;
    let (db, t) = name.split_once('.')?;
    Some(format!(
        "{}.{}",
        crate::model::my_ident(db),
        crate::model::my_ident(t)
    ))
}

/// Every privilege `setup` and `run` will use for this mapping set, on both sides
/// ([`super::grants`]).
pub async fn check_privileges(cfg: &Config, plan: &Plan) -> Vec<CheckLine> {
    let mut out = Vec::new();
    if let Ok(mut conn) = crate::connect::mysql(&cfg.mysql, None, false).await {
        out.extend(super::grants::mysql(cfg, plan, &mut conn).await);
        let _ = conn.disconnect().await;
    }
    if let Ok(client) = crate::connect::postgres(&cfg.postgres, "duplex check").await {
        out.extend(super::grants::postgres(cfg, plan, &client).await);
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
    let client = match crate::connect::postgres(&cfg.postgres, "duplex check").await {
        Ok(c) => c,
        Err(_) => return out,
    };
    out.push(replication_connection(cfg).await);
    out.push(row_level_security(cfg, plan, &client).await);
    out.extend(wal_and_role(cfg, &client).await);
    out.push(echo_suppression(cfg, &client).await);
    // Copying tables mapped `reverse` takes a temporary slot of its own.
    if plan
        .tables
        .iter()
        .any(|t| t.direction == crate::mapping::Direction::Reverse)
    {
        out.push(free_slots(&client).await);
    }
    out.extend(publication_and_slot(cfg, plan, &client).await);
    if plan.tables.iter().any(|t| t.has_newest()) {
        out.extend(clock_skew(cfg, &client).await);
    }
    out
}

/// Under `newest` the two servers' clocks decide which change is the newer: the gap between
/// them, each read against this machine's clock (half the round trip taken off).
async fn clock_skew(cfg: &Config, client: &tokio_postgres::Client) -> Option<CheckLine> {
    use mysql_async::prelude::Queryable;
    let local = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let before = local();
    let pg: f64 = client
        .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
        .await
        .ok()?
        .get(0);
    let pg_ahead = pg - (before + local()) / 2.0;
    let mut conn = crate::connect::mysql(&cfg.mysql, None, false).await.ok()?;
    let before = local();
    let my: Option<f64> = conn
        .query_first("SELECT CAST(UNIX_TIMESTAMP(NOW(6)) AS DOUBLE)")
        .await
        .ok()?;
    let my_ahead = my? - (before + local()) / 2.0;
    let _ = conn.disconnect().await;
    let gap = my_ahead - pg_ahead;
    Some(CheckLine {
        ok: gap.abs() < 1.0,
        what: format!(
            "clocks: MySQL's is {:.3} s {} PostgreSQL's (`newest` compares their commit times in whole seconds)",
            gap.abs(),
            if gap >= 0.0 { "ahead of" } else { "behind" }
        ),
        fix: "run NTP (chrony, systemd-timesyncd) on both servers: a gap of s seconds makes a change s seconds newer or older than it was".into(),
    })
}

/// The first column of a one-row query as text, or why it could not be read.
async fn setting(client: &tokio_postgres::Client, sql: &str) -> String {
    client
        .query_one(sql, &[])
        .await
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_else(|e| format!("(cannot read: {e})"))
}

/// The replication connection itself: a pooler in between fails here in its own ways.
async fn replication_connection(cfg: &Config) -> CheckLine {
    let probe = async {
        let mut conn = crate::source::postgres::stream::ReplicationConn::connect(
            &cfg.postgres,
            "duplex check",
        )
        .await?;
        conn.identify_system().await
    };
    match probe.await {
        Ok(id) => CheckLine {
            ok: true,
            what: format!(
                "PostgreSQL: a replication connection works (system {}, timeline {})",
                id.system_id, id.timeline
            ),
            fix: String::new(),
        },
        Err(e) => {
            let text = e.to_string();
            match pooler_failure(&text) {
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
            }
        }
    }
}

/// Row-level security that could make the copy of a table read fewer rows than it has.
async fn row_level_security(
    cfg: &Config,
    plan: &Plan,
    client: &tokio_postgres::Client,
) -> CheckLine {
    let sources: Vec<crate::model::TableName> =
        plan.reverse.iter().map(|r| r.source.clone()).collect();
    match crate::snapshot::postgres::rls_hidden(client, &sources).await {
        Ok(hidden) if hidden.is_empty() => CheckLine {
            ok: true,
            what: format!(
                "PostgreSQL: role {} sees every row of the {} table(s) replicated from PostgreSQL (no row-level security in the way)",
                cfg.postgres.user,
                sources.len()
            ),
            fix: String::new(),
        },
        Ok(hidden) => CheckLine {
            ok: false,
            what: format!(
                "PostgreSQL: {}",
                crate::snapshot::postgres::rls_message(&hidden, &cfg.postgres.user)
            ),
            fix: format!(
                "ALTER ROLE {} BYPASSRLS (as a superuser), or a policy FOR SELECT TO {} USING (true) on each table named",
                cfg.postgres.user, cfg.postgres.user
            ),
        },
        Err(e) => CheckLine {
            ok: false,
            what: format!("PostgreSQL: {e}"),
            fix: "see the message".into(),
        },
    }
}

/// Logical WAL, and a role that may read a slot.
async fn wal_and_role(cfg: &Config, client: &tokio_postgres::Client) -> Vec<CheckLine> {
    let mut out = Vec::new();
    let wal = setting(client, "SELECT current_setting('wal_level')").await;
    out.push(CheckLine {
        ok: wal == "logical",
        what: format!(
            "PostgreSQL: wal_level = {wal} (needs logical for tables mapped reverse/both)"
        ),
        fix: "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL".into(),
    });
    let role = setting(
        client,
        "SELECT (rolreplication OR rolsuper)::text FROM pg_roles WHERE rolname = current_user",
    )
    .await;
    out.push(CheckLine {
        ok: role == "true",
        what: "PostgreSQL: the role has REPLICATION (reads the slot)".into(),
        fix: format!("ALTER ROLE {} WITH REPLICATION", cfg.postgres.user),
    });
    out
}

/// Which echo mechanism this role can use.
async fn echo_suppression(cfg: &Config, client: &tokio_postgres::Client) -> CheckLine {
    match crate::origin::echo_mode(client).await {
        Ok(crate::origin::Echo::Origin) => CheckLine {
            ok: true,
            what: "PostgreSQL: echo suppression by replication origin (pg_replication_origin_* executable)".into(),
            fix: String::new(),
        },
        Ok(crate::origin::Echo::Marker) => CheckLine {
            ok: true,
            what: format!(
                "PostgreSQL: echo suppression by the checkpoint-row marker: this role may not execute \
                 pg_replication_origin_*, so {}.checkpoint is published and written first in every transaction",
                cfg.postgres.duplex_schema
            ),
            fix: String::new(),
        },
        Err(e) => CheckLine {
            ok: false,
            what: format!("PostgreSQL: {e}"),
            fix: "see the message".into(),
        },
    }
}

/// A free replication slot for the initial copy of tables mapped `reverse`.
async fn free_slots(client: &tokio_postgres::Client) -> CheckLine {
    let free = setting(
        client,
        "SELECT (current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots))::text",
    )
    .await;
    CheckLine {
        ok: free.parse::<i64>().is_ok_and(|n| n >= 1),
        what: format!(
            "PostgreSQL: {free} free replication slot(s) (the initial copy of tables mapped reverse takes a temporary one)"
        ),
        fix: "raise max_replication_slots (and max_wal_senders) and restart PostgreSQL".into(),
    }
}

/// The publication (the reverse tables and the heartbeat) and the slot `duplex setup` creates.
async fn publication_and_slot(
    cfg: &Config,
    plan: &Plan,
    client: &tokio_postgres::Client,
) -> Vec<CheckLine> {
    let mut out = Vec::new();
    let name = crate::model::slot_name(&cfg.pipeline);
    let published: Vec<String> = client
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1",
            &[&name],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default();
    // The reverse direction's heartbeat (its lag) travels through the publication too.
    let heartbeat = crate::state::heartbeat::source_table(crate::model::Way::Reverse, cfg);
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
    // Tables with `both` columns need the whole old row (column-level changes, conflicts); the
    // others, the mapping key in it (deletes and key changes are found by it).
    for r in plan.reverse.iter().filter(|r| r.guarded().is_empty()) {
        let key: Vec<String> = r
            .key
            .iter()
            .map(|&k| r.columns[k].pg_name.clone())
            .collect();
        let covers = crate::source::postgres::publication::identity_covers(client, &r.source, &key)
            .await
            .unwrap_or(false);
        out.push(CheckLine {
            ok: covers,
            what: if covers {
                format!("PostgreSQL: the replica identity of {} carries the mapping key ({})", r.source, key.join(", "))
            } else {
                format!("PostgreSQL: the replica identity of {} lacks the mapping key ({}): its deletes and key changes could not reach MySQL (and without any identity PostgreSQL refuses the table's UPDATEs and DELETEs once published)", r.source, key.join(", "))
            },
            fix: format!("run `duplex setup -c {}` (it sets REPLICA IDENTITY FULL)", cfg.path.display()),
        });
    }
    for r in plan.reverse.iter().filter(|r| !r.guarded().is_empty()) {
        let full = client
            .query_opt(
                "SELECT c.relreplident = 'f' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&r.source.schema, &r.source.name],
            )
            .await
            .ok()
            .flatten()
            .is_some_and(|row| row.get::<_, bool>(0));
        out.push(CheckLine {
            ok: full,
            what: if full {
                format!("PostgreSQL: {} has REPLICA IDENTITY FULL (its `both` columns need the old row)", r.source)
            } else {
                format!("PostgreSQL: {} lacks REPLICA IDENTITY FULL: without the old row every change would count as changing every `both` column, and conflicts could not be told", r.source)
            },
            fix: format!("run `duplex setup -c {}` (or ALTER TABLE {} REPLICA IDENTITY FULL)", cfg.path.display(), r.source.pg_quoted()),
        });
    }
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
