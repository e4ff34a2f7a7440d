//! The statement path: a run's rows written as prepared multi-row VALUES statements (upsert,
//! delete, clear), each shape prepared once per table, kind and row count and kept.
//!
//! Owns the prepared row statements ([`PgSink`]'s `stmts`) and the chunking of a run under
//! PostgreSQL's bind-parameter limit. Uses `sql` for the statement text, `queue` to send them
//! and `encode` for the cells.

use tokio_postgres::Statement;

use super::encode::{Cell, EncodedRow};
use super::queue::{sent, Pending};
use super::sql::{clear_values_sql, delete_values_sql, upsert_values_sql};
use super::{Kind, PgSink};
use crate::error::{Error, Result};

/// PostgreSQL's limit on bind parameters per statement.
const MAX_PARAMS: usize = 65_535;

impl PgSink {
    async fn statement(&mut self, table: usize, kind: Kind, rows: usize) -> Result<Statement> {
        if let Some(s) = self.stmts.get(&(table, kind, rows)) {
            return Ok(s.clone());
        }
        let t = &self.plan.tables[table];
        let sql = match kind {
            Kind::Upsert => upsert_values_sql(t, rows),
            Kind::Delete => delete_values_sql(t, rows),
            Kind::Clear => clear_values_sql(t, rows),
            Kind::Pivot => unreachable!("pivot cells are written by write_pivot"),
            Kind::Relay => unreachable!("relays are applied by apply_relay"),
        };
        let stmt = self.client.prepare(&sql).await.map_err(|e| {
            Error::from_pg(e, true, &format!("preparing a statement for {}", t.target))
        })?;
        self.stmts.insert((table, kind, rows), stmt.clone());
        Ok(stmt)
    }

    pub(super) async fn write_values(
        &mut self,
        table: usize,
        kind: Kind,
        rows: &[EncodedRow],
    ) -> Result<()> {
        let stmts = self.values_statements(table, kind, rows).await?;
        let mut pending = Vec::new();
        self.send_values(table, &stmts, rows, &mut pending);
        sent(pending).await
    }

    /// The statements writing `rows` of a run as multi-row VALUES, with the rows each takes.
    pub(super) async fn values_statements(
        &mut self,
        table: usize,
        kind: Kind,
        rows: &[EncodedRow],
    ) -> Result<Vec<(Statement, usize)>> {
        let width = rows.first().map_or(1, |r| r.len().max(1));
        let max_rows = (MAX_PARAMS / width).clamp(1, 256);
        let mut out = Vec::new();
        let mut i = 0;
        while i < rows.len() {
            let left = rows.len() - i;
            let n = if left >= max_rows {
                max_rows
            } else if left > 64 {
                64
            } else {
                left
            };
            out.push((self.statement(table, kind, n).await?, n));
            i += n;
        }
        Ok(out)
    }

    /// Queues the VALUES statements of a run (see [`sent`]).
    pub(super) fn send_values<'a>(
        &'a self,
        table: usize,
        stmts: &'a [(Statement, usize)],
        rows: &'a [EncodedRow],
        pending: &mut Vec<Pending<'a>>,
    ) {
        let mut i = 0;
        for (stmt, n) in stmts {
            let chunk = &rows[i..i + n];
            i += n;
            let what = format!("writing {} rows to {}", n, self.plan.tables[table].target);
            let client = &self.client;
            pending.push(Box::pin(async move {
                let params: Vec<Cell<'_>> =
                    chunk.iter().flat_map(|r| r.cells().map(Cell)).collect();
                client
                    .execute_raw(stmt, params.iter())
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::from_pg(e, true, &what))
            }));
        }
    }
}
