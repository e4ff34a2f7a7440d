//! The COPY path for large runs: binary COPY straight into the target table when every row was
//! a source INSERT and the entry fills no look-up column, otherwise into a session-local staging
//! table applied with one `INSERT … SELECT … ON CONFLICT` (look-ups resolved in it) /
//! `DELETE … USING`.
//!
//! Owns the staging tables (their names and the DDL creating them) and the binary COPY stream.
//! Uses `sql` for column lists and the conflict clause, and `encode`'s COPY row layout.

use bytes::{BufMut, BytesMut};
use futures_util::SinkExt;

use super::encode::EncodedRow;
use super::sql::{column_list, key_list, upsert_staged_sql};
use super::{Kind, PgSink};
use crate::error::{Error, Result};
use crate::mapping::Plan;
use crate::model::pg_ident;

/// Bytes of COPY data per message sent.
const COPY_PIECE: usize = 1 << 20;

/// The DDL creating the session-local staging tables of every plan table (outside any
/// transaction, when the sink connects).
pub(super) fn staging_ddl(plan: &Plan) -> String {
    let mut ddl = String::new();
    for (i, t) in plan.tables.iter().enumerate() {
        let cols = column_list(t);
        let keys = key_list(t);
        ddl.push_str(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS duplex_stage_{i} AS SELECT {cols} FROM {} WITH NO DATA;\n\
             CREATE TEMP TABLE IF NOT EXISTS duplex_stagek_{i} AS SELECT {keys} FROM {} WITH NO DATA;\n",
            t.target.pg_quoted(),
            t.target.pg_quoted()
        ));
    }
    ddl
}

impl PgSink {
    /// Sends `rows` with binary COPY into `into` (a table name, already quoted).
    async fn copy_rows(
        &self,
        into: &str,
        cols: &str,
        rows: &[EncodedRow],
        what: &str,
    ) -> Result<()> {
        let err = |e| Error::from_pg(e, true, &format!("copying {} rows into {what}", rows.len()));
        let sink = self
            .client
            .copy_in(&format!("COPY {into} ({cols}) FROM STDIN (FORMAT binary)"))
            .await
            .map_err(err)?;
        futures_util::pin_mut!(sink);
        // Sent in pieces of about COPY_PIECE bytes, each filled in a buffer of its own size: a
        // buffer that grows while filling copies what it holds each time.
        let mut buf = BytesMut::with_capacity(COPY_PIECE);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0);
        buf.put_i32(0);
        for r in rows {
            let bytes = r.as_copy_bytes();
            // The row, its field count and room for the trailer.
            let need = bytes.len() + 4;
            if buf.len() + need > buf.capacity() && !buf.is_empty() {
                sink.send(buf.split().freeze()).await.map_err(err)?;
                buf.reserve(COPY_PIECE.max(need));
            }
            buf.put_i16(r.len() as i16);
            buf.put_slice(bytes);
        }
        buf.put_i16(-1);
        sink.send(buf.split().freeze()).await.map_err(err)?;
        sink.as_mut().finish().await.map_err(err)?;
        Ok(())
    }

    /// Rows that were all inserted at the source are usually new on the target too: COPY them
    /// straight in, under a savepoint. Returns false (and leaves nothing behind) when that is
    /// refused — a row already exists after a restart, say — and the upsert path must be used.
    pub(super) async fn try_copy_direct(
        &mut self,
        table: usize,
        rows: &[EncodedRow],
    ) -> Result<bool> {
        let t = self.plan.tables[table].clone();
        let sp = |e| Error::from_pg(e, true, "setting a savepoint");
        self.client
            .batch_execute("SAVEPOINT duplex_copy")
            .await
            .map_err(sp)?;
        match self
            .copy_rows(
                &t.target.pg_quoted(),
                &column_list(&t),
                rows,
                &t.target.to_string(),
            )
            .await
        {
            Ok(()) => {
                self.client
                    .batch_execute("RELEASE SAVEPOINT duplex_copy")
                    .await
                    .map_err(sp)?;
                Ok(true)
            }
            Err(e) if !e.is_transient() => {
                tracing::debug!(table = %t.target, error = %e, "direct COPY refused; upserting");
                self.client
                    .batch_execute(
                        "ROLLBACK TO SAVEPOINT duplex_copy; RELEASE SAVEPOINT duplex_copy",
                    )
                    .await
                    .map_err(sp)?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Upserts or deletes (the only kinds `flush` copies) through a staging table.
    pub(super) async fn write_copy(
        &mut self,
        table: usize,
        kind: Kind,
        rows: &[EncodedRow],
    ) -> Result<()> {
        let t = self.plan.tables[table].clone();
        let upsert = match kind {
            Kind::Upsert => true,
            Kind::Delete => false,
            Kind::Clear | Kind::Pivot | Kind::Relay => {
                unreachable!(
                    "cleared and pivoted rows go out as statements, relays are not buffered"
                )
            }
        };
        let (stage, cols) = if upsert {
            (format!("duplex_stage_{table}"), column_list(&t))
        } else {
            (format!("duplex_stagek_{table}"), key_list(&t))
        };
        self.copy_rows(&stage, &cols, rows, &t.target.to_string())
            .await?;
        let apply = if upsert {
            format!("{}; TRUNCATE {stage}", upsert_staged_sql(&t, &stage))
        } else {
            let cond: Vec<String> = t
                .key
                .iter()
                .map(|&k| {
                    let c = pg_ident(&t.columns[k].target.name);
                    format!("t.{c} = s.{c}")
                })
                .collect();
            format!(
                "DELETE FROM {} t USING {stage} s WHERE {}; TRUNCATE {stage}",
                t.target.pg_quoted(),
                cond.join(" AND ")
            )
        };
        self.client.batch_execute(&apply).await.map_err(|e| {
            Error::from_pg(
                e,
                true,
                &format!("applying {} staged rows to {}", rows.len(), t.target),
            )
        })
    }
}
