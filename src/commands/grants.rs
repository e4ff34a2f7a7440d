//! The privileges `duplex setup` and `duplex run` will use, on both servers, for the mapping set
//! as configured — the forward targets, the look-ups, the reverse targets, duplex's own tables
//! — each asked of the server itself, with the exact statement that grants a missing one.
//!
//! PostgreSQL answers through `has_table_privilege` and friends (roles included) and the
//! tables' owners; MySQL through probes that need the privilege and change nothing (`SELECT …
//! LIMIT 0`, `EXPLAIN` of the INSERT, UPDATE and DELETE, which MySQL and MariaDB check like the
//! statement itself), and, for what no probe can show without creating something (CREATE and
//! ALTER on duplex's database, its tables before `setup` made them), the grants the server
//! lists for the session (`SHOW GRANTS`, the current role's included).
//!
//! `duplex check` prints these lines; `duplex setup` refuses to start while one fails.

use std::collections::{BTreeMap, BTreeSet};

use mysql_async::prelude::Queryable;

use super::check::CheckLine;
use crate::config::Config;
use crate::mapping::{Direction, OnDelete, Plan, ReverseWrite};
use crate::model::{my_ident, pg_ident, TableName};

/// A PostgreSQL name as a person would type it: bare when it can be, quoted otherwise.
fn ident(name: &str) -> String {
    const RESERVED: &[&str] = &[
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "both",
        "case",
        "cast",
        "check",
        "collate",
        "column",
        "constraint",
        "create",
        "default",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "for",
        "foreign",
        "from",
        "grant",
        "group",
        "having",
        "in",
        "into",
        "leading",
        "limit",
        "not",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "primary",
        "references",
        "select",
        "table",
        "then",
        "to",
        "union",
        "unique",
        "user",
        "using",
        "when",
        "where",
        "with",
    ];
    let simple = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if simple && !RESERVED.contains(&name) {
        name.to_string()
    } else {
        pg_ident(name)
    }
}

fn table_ident(t: &TableName) -> String {
    format!("{}.{}", ident(&t.schema), ident(&t.name))
}

/// What duplex does with a table, for the line that names a gap.
type Uses = BTreeMap<&'static str, BTreeSet<&'static str>>;

/// Privileges needed per table, with why.
#[derive(Default)]
struct Needs(BTreeMap<TableName, Uses>);

impl Needs {
    fn need(&mut self, t: &TableName, privilege: &'static str, why: &'static str) {
        self.0
            .entry(t.clone())
            .or_default()
            .entry(privilege)
            .or_default()
            .insert(why);
    }
}

/// The privileges needed per table on PostgreSQL, and why (privilege → uses).
fn pg_needs(plan: &Plan) -> BTreeMap<TableName, Uses> {
    let mut out = Needs::default();
    let mut need = |t: &TableName, privilege, why| out.need(t, privilege, why);
    for t in plan
        .tables
        .iter()
        .filter(|t| t.direction != Direction::Reverse)
    {
        need(&t.target, "SELECT", "the copy's and verify's reads");
        need(&t.target, "INSERT", "MySQL → PostgreSQL writes rows");
        need(&t.target, "UPDATE", "MySQL → PostgreSQL updates rows");
        if t.on_delete == OnDelete::Delete && !t.is_pivot() {
            need(&t.target, "DELETE", "MySQL → PostgreSQL deletes rows");
        }
        for l in &t.lookups {
            need(&l.table, "SELECT", "a look-up reads it");
        }
    }
    for r in &plan.reverse {
        need(&r.source, "SELECT", "the copy to MySQL reads it");
    }
    out.0
}

/// The privileges needed per table on MySQL, and why.
fn my_needs(plan: &Plan) -> BTreeMap<TableName, Uses> {
    let mut out = Needs::default();
    let mut need = |t: &TableName, privilege, why| out.need(t, privilege, why);
    for t in plan
        .tables
        .iter()
        .filter(|t| t.direction != Direction::Reverse)
    {
        need(&t.source, "SELECT", "the copy reads it");
    }
    for r in &plan.reverse {
        need(
            &r.target,
            "SELECT",
            "PostgreSQL → MySQL reads what a row holds",
        );
        need(&r.target, "UPDATE", "PostgreSQL → MySQL updates rows");
        if r.write == ReverseWrite::Upsert {
            need(&r.target, "INSERT", "PostgreSQL → MySQL writes rows");
            need(&r.target, "DELETE", "PostgreSQL → MySQL deletes rows");
        }
    }
    out.0
}

/// `why` of each privilege in `missing`, as one text.
fn reasons(uses: &Uses, missing: &[&'static str]) -> String {
    let mut why: Vec<&str> = missing
        .iter()
        .flat_map(|p| uses[p].iter().copied())
        .collect();
    why.sort_unstable();
    why.dedup();
    why.join("; ")
}

/// The privilege lines of PostgreSQL.
pub async fn postgres(
    cfg: &Config,
    plan: &Plan,
    client: &tokio_postgres::Client,
) -> Vec<CheckLine> {
    let mut out = Vec::new();
    let role = &cfg.postgres.user;
    let ask = |sql: &'static str| sql;
    // duplex's schema: created by setup (CREATE on the database), or there (USAGE and CREATE
    // on it, and its tables owned by the role: setup alters them on upgrades).
    let schema = &cfg.postgres.duplex_schema;
    let exists = client
        .query_opt(ask("SELECT has_schema_privilege($1, 'USAGE'), has_schema_privilege($1, 'CREATE') FROM pg_namespace WHERE nspname = $1"), &[schema])
        .await;
    match exists {
        Ok(Some(r)) => {
            let (usage, create): (bool, bool) = (r.get(0), r.get(1));
            out.push(line(
                usage && create,
                format!("PostgreSQL: USAGE and CREATE on duplex's schema {schema}"),
                format!(
                    "GRANT USAGE, CREATE ON SCHEMA {} TO {};",
                    ident(schema),
                    ident(role)
                ),
            ));
            let foreign = client
                .query(
                    "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT pg_has_role(c.relowner, 'USAGE')
                     ORDER BY 1",
                    &[schema],
                )
                .await
                .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>())
                .unwrap_or_default();
            out.push(line(
                foreign.is_empty(),
                format!(
                    "PostgreSQL: duplex's tables in {schema} belong to {role} (setup alters them){}",
                    if foreign.is_empty() { String::new() } else { format!(": not {}", foreign.join(", ")) }
                ),
                foreign
                    .iter()
                    .map(|t| format!("ALTER TABLE {}.{} OWNER TO {};", ident(schema), ident(t), ident(role)))
                    .collect::<Vec<_>>()
                    .join(" "),
            ));
        }
        Ok(None) => {
            let create: bool = client
                .query_one(
                    "SELECT has_database_privilege(current_database(), 'CREATE')",
                    &[],
                )
                .await
                .map(|r| r.get(0))
                .unwrap_or(false);
            let db = &cfg.postgres.dbname;
            out.push(line(
                create,
                format!(
                    "PostgreSQL: CREATE on database {db} (setup creates duplex's schema {schema})"
                ),
                format!("GRANT CREATE ON DATABASE {} TO {};", ident(db), ident(role)),
            ));
        }
        Err(e) => out.push(line(
            false,
            format!("PostgreSQL: reading privileges: {e}"),
            "see the message".into(),
        )),
    }
    for (table, uses) in pg_needs(plan) {
        let privileges: Vec<&'static str> = uses.keys().copied().collect();
        let got = client
            .query_opt(
                "SELECT has_schema_privilege(n.oid, 'USAGE'), array(SELECT p FROM unnest($3::text[]) p WHERE NOT has_table_privilege(c.oid, p))
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                &[&table.schema, &table.name, &privileges],
            )
            .await;
        let Ok(Some(r)) = got else {
            // A table that does not exist is the mapping's line to report.
            continue;
        };
        let usage: bool = r.get(0);
        let missing: Vec<String> = r.get(1);
        let missing: Vec<&'static str> = privileges
            .iter()
            .copied()
            .filter(|p| missing.iter().any(|m| m == p))
            .collect();
        if !usage {
            out.push(line(
                false,
                format!(
                    "PostgreSQL: USAGE on schema {} (tables of the mapping live there)",
                    table.schema
                ),
                format!(
                    "GRANT USAGE ON SCHEMA {} TO {};",
                    ident(&table.schema),
                    ident(role)
                ),
            ));
        }
        out.push(table_line(
            "PostgreSQL",
            &table,
            &uses,
            &missing,
            format!(
                "GRANT {} ON {} TO {};",
                missing.join(", "),
                table_ident(&table),
                ident(role)
            ),
        ));
    }
    // Publishing a table and giving it REPLICA IDENTITY FULL are its owner's to do.
    for r in &plan.reverse {
        let owner = client
            .query_opt(
                "SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                &[&r.source.schema, &r.source.name],
            )
            .await;
        if let Ok(Some(row)) = owner {
            let own: bool = row.get(0);
            out.push(line(
                own,
                format!(
                    "PostgreSQL: {role} owns {} (setup publishes it and sets its replica identity)",
                    r.source
                ),
                format!(
                    "ALTER TABLE {} OWNER TO {};",
                    table_ident(&r.source),
                    ident(role)
                ),
            ));
        }
    }
    out
}

/// The privilege lines of MySQL.
pub async fn mysql(cfg: &Config, plan: &Plan, conn: &mut mysql_async::Conn) -> Vec<CheckLine> {
    let mut out = Vec::new();
    let to = account(conn, cfg).await;
    let grants = Grants::read(conn).await;
    for (table, uses) in my_needs(plan) {
        let mut missing = Vec::new();
        for &p in uses.keys() {
            match probe(conn, &table, p, plan).await {
                Some(true) => {}
                Some(false) => missing.push(p),
                // The table is not there: the mapping's line says so.
                None => {}
            }
        }
        out.push(table_line(
            "MySQL",
            &table,
            &uses,
            &missing,
            format!(
                "GRANT {} ON {}.{} TO {to};",
                missing.join(", "),
                my_ident(&table.schema),
                my_ident(&table.name)
            ),
        ));
    }
    // duplex's database: setup creates it and its tables, and alters them on upgrades; the
    // directions read and write them.
    let db = &cfg.mysql.duplex_database;
    let want = ["CREATE", "ALTER", "SELECT", "INSERT", "UPDATE", "DELETE"];
    let missing: Vec<&str> = want
        .iter()
        .copied()
        .filter(|p| !grants.allow(db, None, p))
        .collect();
    out.push(line(
        missing.is_empty(),
        if missing.is_empty() {
            format!("MySQL: {} on duplex's database {db}", want.join(", "))
        } else {
            format!(
                "MySQL: {} on duplex's database {db} missing (setup creates its tables, both directions keep their checkpoints there)",
                missing.join(", ")
            )
        },
        format!("GRANT {} ON {}.* TO {to};", want.join(", "), my_ident(db)),
    ));
    out
}

/// The session's account as a GRANT names it (`'duplex'@'%'`).
pub async fn account(conn: &mut mysql_async::Conn, cfg: &Config) -> String {
    let account: String = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| format!("{}@%", cfg.mysql.user));
    match account.rsplit_once('@') {
        Some((u, h)) => format!("'{u}'@'{h}'"),
        None => format!("'{account}'"),
    }
}

/// Whether the session may use `privilege` on `table`, asked with a statement that needs it and
/// changes nothing; `None` when the table is not there.
async fn probe(
    conn: &mut mysql_async::Conn,
    table: &TableName,
    privilege: &str,
    plan: &Plan,
) -> Option<bool> {
    let t = format!("{}.{}", my_ident(&table.schema), my_ident(&table.name));
    let column = plan
        .reverse
        .iter()
        .find(|r| r.target == *table)
        .map(|r| my_ident(&r.columns[r.key[0]].my.name));
    let sql = match privilege {
        "SELECT" => format!("SELECT 1 FROM {t} LIMIT 0"),
        "INSERT" => format!("EXPLAIN INSERT INTO {t} () VALUES ()"),
        "UPDATE" => {
            let c = column?;
            format!("EXPLAIN UPDATE {t} SET {c} = {c} WHERE 1 = 0")
        }
        "DELETE" => format!("EXPLAIN DELETE FROM {t} WHERE 1 = 0"),
        _ => return Some(true),
    };
    match conn.query_drop(sql).await {
        Ok(()) => Some(true),
        Err(mysql_async::Error::Server(e)) if matches!(e.code, 1142 | 1143 | 1044) => Some(false),
        Err(mysql_async::Error::Server(e)) if e.code == 1146 => None,
        Err(_) => Some(false),
    }
}

/// The grants the server lists for the session (`SHOW GRANTS`: the account's and the current
/// role's), at global and database level.
struct Grants {
    /// (database pattern or `*`, privileges), upper case.
    levels: Vec<(String, Vec<String>)>,
}

impl Grants {
    async fn read(conn: &mut mysql_async::Conn) -> Grants {
        let lines: Vec<String> = conn.query("SHOW GRANTS").await.unwrap_or_default();
        let mut levels = Vec::new();
        for l in lines {
            let Some(rest) = l.strip_prefix("GRANT ") else {
                continue;
            };
            let Some((privileges, after)) = rest.split_once(" ON ") else {
                continue;
            };
            let Some((object, _)) = after.split_once(" TO ") else {
                continue;
            };
            let db = match object.trim() {
                "*.*" => "*".to_string(),
                o => match o.strip_suffix(".*") {
                    Some(d) => d.trim_matches('`').replace("``", "`"),
                    // A table-level grant: not the database's.
                    None => continue,
                },
            };
            let privileges = split_privileges(privileges);
            levels.push((db, privileges));
        }
        Grants { levels }
    }

    /// Whether database `db` (a table of it when `table` is given) allows `privilege`.
    fn allow(&self, db: &str, _table: Option<&str>, privilege: &str) -> bool {
        self.levels.iter().any(|(pattern, privileges)| {
            (pattern == "*" || like(pattern, db))
                && privileges
                    .iter()
                    .any(|p| p == privilege || p == "ALL PRIVILEGES" || p == "ALL")
        })
    }
}

/// `SELECT, INSERT, UPDATE (a, b)` → the privileges granted on the whole object.
fn split_privileges(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter()
        .map(|p| p.trim().to_ascii_uppercase())
        // Column-level grants do not cover the table.
        .filter(|p| !p.contains('('))
        .collect()
}

/// MySQL's database-name patterns in grants: `_` and `%` are wildcards unless escaped.
fn like(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('%') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('_') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// The line of one table: the privileges it needs, or those missing with why and the fix.
fn table_line(
    side: &str,
    table: &TableName,
    uses: &Uses,
    missing: &[&'static str],
    fix: String,
) -> CheckLine {
    let all: Vec<&str> = uses.keys().copied().collect();
    line(
        missing.is_empty(),
        if missing.is_empty() {
            format!("{side}: {} on {table}", all.join(", "))
        } else {
            format!(
                "{side}: {} on {table} missing ({})",
                missing.join(", "),
                reasons(uses, missing)
            )
        },
        fix,
    )
}

fn line(ok: bool, what: String, fix: String) -> CheckLine {
    CheckLine {
        ok,
        what,
        fix: if ok { String::new() } else { fix },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_lines_are_read_per_database() {
        let g = Grants {
            levels: vec![
                (
                    "*".into(),
                    split_privileges("REPLICATION SLAVE, BINLOG MONITOR"),
                ),
                ("duplex".into(), split_privileges("ALL PRIVILEGES")),
                (
                    "shop\\_%".into(),
                    split_privileges("SELECT, UPDATE (STATUS_ID)"),
                ),
            ],
        };
        assert!(g.allow("duplex", None, "CREATE"));
        assert!(g.allow("shop_1", None, "SELECT"));
        assert!(
            !g.allow("shopx1", None, "SELECT"),
            "an escaped _ is literal"
        );
        assert!(
            !g.allow("shop_1", None, "UPDATE"),
            "a column grant is not the table's"
        );
        assert!(!g.allow("other", None, "SELECT"));
    }
}
