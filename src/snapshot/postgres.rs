//! Reading a consistent copy of PostgreSQL tables, in primary-key chunks, at the consistent point
//! of a replication slot.
//!
//! A temporary slot is created with `EXPORT_SNAPSHOT` on a replication connection; a normal
//! session adopts that snapshot (`SET TRANSACTION SNAPSHOT`) and reads the tables. Transactions
//! that commit before the slot's consistent point are in the copy; the pipeline's own slot
//! (older) delivers those and later ones, and the snapshot filter drops the former for the
//! copied tables. The temporary slot disappears with its connection, whatever happens.

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::config::PostgresConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::mapping::ReversePlan;
use crate::model::{pg_ident, ColumnSchema, Lsn, SourceType, TableName, TableSchema, Value};
use crate::source::postgres::decode::{decode_text, SESSION_SETTINGS};
use crate::source::postgres::stream::ReplicationConn;

use super::ReadRow;
use crate::state::progress::KeyValue;

/// A consistent read view of the PostgreSQL database at a slot's consistent point.
pub struct PgSnapshot {
    /// Holds the temporary slot and its exported snapshot; must stay open and idle (none for
    /// a light read view, see [`PgSnapshot::open_light`]).
    _slot: Option<ReplicationConn>,
    client: Client,
    pub position: Lsn,
}

impl PgSnapshot {
    pub async fn open(cfg: &PostgresConfig, pipeline: &str) -> Result<PgSnapshot> {
        let mut slot = ReplicationConn::connect(cfg, "duplex snapshot slot").await?;
        let name = format!("duplex_{pipeline}_snapshot");
        let (position, snapshot) = slot.create_exporting_temp_slot(&name).await?;
        let client = crate::connect::postgres(cfg, "duplex snapshot").await?;
        let mut sql = String::from(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT ",
        );
        sql.push_str(&quote_literal(&snapshot));
        sql.push(';');
        for (k, v) in SESSION_SETTINGS {
            sql.push_str(&format!("SET LOCAL {k} = {};", quote_literal(v)));
        }
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| Error::from_pg(e, false, "adopting the slot's exported snapshot"))?;
        Ok(PgSnapshot {
            _slot: Some(slot),
            client,
            position,
        })
    }

    /// A read view without a slot (verify): a `REPEATABLE READ` transaction whose first
    /// statement reads `pg_current_wal_insert_lsn()`. Its snapshot is taken as that statement
    /// starts, so every transaction it sees has its commit record before the position read: a
    /// stream that has applied up to the position has applied everything the view shows. (Not
    /// `pg_current_wal_lsn()`, the write position: with `synchronous_commit = off` a commit is
    /// visible before its record is written, and verify saw a stream "past" a position without
    /// a change it had read.)
    pub async fn open_light(cfg: &PostgresConfig) -> Result<PgSnapshot> {
        Self::session(cfg, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await
    }

    /// A read-committed read-write transaction for locking rows (`duplex repair`); its
    /// position is read by [`PgSnapshot::mark`] once the locks are held.
    pub async fn open_locking(cfg: &PostgresConfig) -> Result<PgSnapshot> {
        Self::session(cfg, "BEGIN; SET LOCAL lock_timeout = '10s'").await
    }

    async fn session(cfg: &PostgresConfig, begin: &str) -> Result<PgSnapshot> {
        let client = crate::connect::postgres(cfg, "duplex verify").await?;
        let mut sql = format!("{begin};");
        for (k, v) in SESSION_SETTINGS {
            sql.push_str(&format!("SET LOCAL {k} = {};", quote_literal(v)));
        }
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| Error::from_pg(e, true, "opening a PostgreSQL read view"))?;
        let mut snap = PgSnapshot {
            _slot: None,
            client,
            position: Lsn(0),
        };
        snap.mark().await?;
        Ok(snap)
    }

    /// Sets `position` to PostgreSQL's WAL position now.
    pub async fn mark(&mut self) -> Result<Lsn> {
        let row = self
            .client
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .map_err(|e| Error::from_pg(e, true, "reading PostgreSQL's WAL position"))?;
        self.position = row.get::<_, String>(0).parse()?;
        Ok(self.position)
    }

    /// The session, inside the view's transaction.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The columns read from a PostgreSQL source table: the mapped ones, keyed by the table's
    /// primary key, which must be among them.
    pub async fn table_schema(&self, plan: &ReversePlan) -> Result<TableSchema> {
        let rows = self
            .client
            .query(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
                 ORDER BY array_position(i.indkey::int2[], a.attnum)",
                &[&plan.source.pg_quoted()],
            )
            .await
            .map_err(|e| {
                Error::from_pg(
                    e,
                    false,
                    &format!("reading the primary key of {}", plan.source),
                )
            })?;
        let pk: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let columns: Vec<ColumnSchema> = plan
            .columns
            .iter()
            .map(|c| ColumnSchema {
                name: c.pg_name.clone(),
                ty: SourceType::Postgres(c.pg_kind.clone()),
                nullable: true,
                column_type: format!("{:?}", c.pg_kind),
            })
            .collect();
        let primary_key = if pk.is_empty() {
            // No primary key: the mapping's key (the MySQL side's key) orders the chunks.
            plan.key.clone()
        } else {
            pk.iter()
                .map(|k| {
                    columns.iter().position(|c| &c.name == k).ok_or_else(|| {
                        Error::new(
                            ErrorKind::Mapping,
                            format!(
                                "{}: primary key column {k} of PostgreSQL table {} is not mapped; the copy is read in primary-key order, so map it",
                                plan.origin, plan.source
                            ),
                        )
                    })
                })
                .collect::<Result<_>>()?
        };
        Ok(TableSchema {
            name: plan.source.clone(),
            columns,
            primary_key,
        })
    }

    /// About how many rows a table has (the planner's estimate).
    pub async fn estimate(&self, table: &TableSchema) -> u64 {
        self.client
            .query_opt(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = $1::text::regclass",
                &[&table.name.pg_quoted()],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get::<_, i64>(0).max(0) as u64)
            .unwrap_or(0)
    }

    /// The next chunk of `table` in key order after `after`, at most `limit` rows.
    pub async fn chunk(
        &mut self,
        table: &TableSchema,
        after: Option<&[KeyValue]>,
        limit: usize,
    ) -> Result<Vec<ReadRow>> {
        self.select(table, after, false, limit).await
    }

    /// The row of `table` with primary key `key`, if there is one (`duplex dlq retry`).
    pub async fn row(&mut self, table: &TableSchema, key: &[KeyValue]) -> Result<Option<ReadRow>> {
        Ok(self.select(table, Some(key), true, 1).await?.pop())
    }

    /// The rows of `table` whose columns `key` (positions in its columns) hold one of `keys`,
    /// locked `FOR UPDATE` when asked (in a view of [`PgSnapshot::open_locking`]).
    pub async fn rows_where(
        &mut self,
        table: &TableSchema,
        key: &[usize],
        keys: &[Vec<KeyValue>],
        for_update: bool,
    ) -> Result<Vec<ReadRow>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = key
            .iter()
            .map(|&i| pg_ident(&table.columns[i].name))
            .collect();
        let tuples: Vec<String> = keys
            .iter()
            .map(|k| {
                let lits: Vec<String> = k.iter().map(literal).collect();
                format!("({})", lits.join(", "))
            })
            .collect();
        let sql = format!(
            "{} WHERE ({}) IN ({}){}",
            Self::select_list(table),
            names.join(", "),
            tuples.join(", "),
            if for_update { " FOR UPDATE" } else { "" }
        );
        self.read(table, &sql).await
    }

    fn select_list(table: &TableSchema) -> String {
        let cols: Vec<String> = table.columns.iter().map(|c| pg_ident(&c.name)).collect();
        format!("SELECT {} FROM {}", cols.join(", "), table.name.pg_quoted())
    }

    async fn select(
        &mut self,
        table: &TableSchema,
        after: Option<&[KeyValue]>,
        exact: bool,
        limit: usize,
    ) -> Result<Vec<ReadRow>> {
        let keys: Vec<String> = table
            .primary_key
            .iter()
            .map(|&i| pg_ident(&table.columns[i].name))
            .collect();
        let mut sql = Self::select_list(table);
        if let Some(after) = after {
            let lits: Vec<String> = after.iter().map(literal).collect();
            let op = if exact { "=" } else { ">" };
            sql.push_str(&format!(
                " WHERE ({}) {op} ({})",
                keys.join(", "),
                lits.join(", ")
            ));
        }
        sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", keys.join(", ")));
        self.read(table, &sql).await
    }

    /// Runs a select of `table`'s columns and decodes its rows.
    async fn read(&mut self, table: &TableSchema, sql: &str) -> Result<Vec<ReadRow>> {
        let what = format!("reading rows of {}", table.name);
        let messages = self
            .client
            .simple_query(sql)
            .await
            .map_err(|e| Error::from_pg(e, false, &what))?;
        let mut rows = Vec::with_capacity(messages.len());
        for m in messages {
            if let SimpleQueryMessage::Row(r) = m {
                let mut values = Vec::with_capacity(table.columns.len());
                let mut unreadable = None;
                for (i, c) in table.columns.iter().enumerate() {
                    let SourceType::Postgres(kind) = &c.ty else {
                        unreachable!("PostgreSQL source columns")
                    };
                    values.push(match r.get(i) {
                        None => Value::Null,
                        // A value with no MySQL counterpart: the row becomes a dead letter
                        // showing the value as text.
                        Some(text) => decode_text(kind, text.as_bytes()).unwrap_or_else(|e| {
                            unreadable.get_or_insert_with(|| format!("column {}: {e}", c.name));
                            Value::Text(text.to_string())
                        }),
                    });
                }
                rows.push(ReadRow { values, unreadable });
            }
        }
        Ok(rows)
    }

    pub async fn close(self) {
        let _ = self.client.batch_execute("COMMIT").await;
    }

    /// Commits the view's transaction (what a locking view wrote), or says why it could not.
    pub async fn commit(self) -> Result<()> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| Error::from_pg(e, true, "committing"))
    }
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A key value as an untyped literal (PostgreSQL resolves it to the column's type).
fn literal(k: &KeyValue) -> String {
    match k {
        KeyValue::I(i) => quote_literal(&i.to_string()),
        KeyValue::U(u) => quote_literal(&u.to_string()),
        KeyValue::B(b) => {
            let mut s = String::from("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            quote_literal(&s)
        }
        KeyValue::S(s) => quote_literal(s),
    }
}

/// The tables among `tables` whose rows row-level security may hide from this session's role:
/// RLS is on, and the role has neither superuser nor BYPASSRLS, does not own the table (or the
/// table forces RLS on its owner), and no permissive `USING (true)` policy for SELECT applies to
/// it without a restrictive one beside it. A snapshot of such a table could read fewer rows than
/// there are, or none, without any error: it is refused.
pub async fn rls_hidden(client: &Client, tables: &[TableName]) -> Result<Vec<TableName>> {
    let sql = "SELECT c.relrowsecurity
                  AND NOT (r.rolsuper OR r.rolbypassrls)
                  AND NOT (pg_has_role(current_user, c.relowner, 'USAGE') AND NOT c.relforcerowsecurity)
                  AND NOT (
                      EXISTS (SELECT 1 FROM pg_policies p
                              WHERE p.schemaname = n.nspname AND p.tablename = c.relname
                                AND p.cmd IN ('SELECT', 'ALL') AND p.permissive = 'PERMISSIVE'
                                AND p.qual = 'true'
                                AND EXISTS (SELECT 1 FROM unnest(p.roles) AS pr(name)
                                            WHERE pr.name = 'public' OR pg_has_role(current_user, pr.name, 'MEMBER')))
                      AND NOT EXISTS (SELECT 1 FROM pg_policies p
                              WHERE p.schemaname = n.nspname AND p.tablename = c.relname
                                AND p.cmd IN ('SELECT', 'ALL') AND p.permissive = 'RESTRICTIVE'
                                AND EXISTS (SELECT 1 FROM unnest(p.roles) AS pr(name)
                                            WHERE pr.name = 'public' OR pg_has_role(current_user, pr.name, 'MEMBER'))))
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_roles r ON r.rolname = current_user
             WHERE n.nspname = $1 AND c.relname = $2";
    let mut hidden = Vec::new();
    for t in tables {
        let row = client
            .query_opt(sql, &[&t.schema, &t.name])
            .await
            .map_err(|e| {
                Error::from_pg(e, false, &format!("reading the row-level security of {t}"))
            })?;
        if row.is_some_and(|r| r.get::<_, bool>(0)) {
            hidden.push(t.clone());
        }
    }
    Ok(hidden)
}

/// The operator-facing refusal for tables [`rls_hidden`] found.
pub fn rls_message(hidden: &[TableName], role: &str) -> String {
    let names: Vec<String> = hidden.iter().map(|t| t.to_string()).collect();
    format!(
        "row-level security on {} may hide rows from role {role} (no BYPASSRLS, not the owner, no policy USING (true) for it): a copy could silently miss rows, so it is refused; ALTER ROLE {role} BYPASSRLS, or CREATE POLICY duplex_reads ON <table> FOR SELECT TO {role} USING (true)",
        names.join(", ")
    )
}
