//! Careful mode and dead letters: after the target rejects a batch, the pipeline re-reads from the
//! checkpoint and applies each row under a savepoint; a row PostgreSQL refuses becomes a dead
//! letter, written into duplex's `dead_letter` table with the commit.
//!
//! Owns the per-row savepoint and the writing of [`PgSink`]'s recorded letters. Uses `run` to
//! flush first, `values` and `pivot` for the one row, `lookup` to note its key.

use super::{PgChange, PgSink};
use crate::error::{Error, Result};
use crate::sink::Mark;

impl PgSink {
    /// Writes one change at once under a savepoint (after the buffered runs): a definite error
    /// rolls back to the savepoint and leaves the transaction usable, so the row can become a
    /// dead letter.
    pub(super) async fn write_under_savepoint(&mut self, change: PgChange) -> Result<()> {
        self.flush().await?;
        if change.kind == super::Kind::Relay {
            return self.apply_relay(change).await;
        }
        // duplex's own update of a table without mirrors is its conditional UPDATE, as in a
        // batch (it carries no texts to decide with).
        let cas = self.own_cas(&change);
        let (change, conflicts) = if change.guard.is_some() && !cas {
            match self.decide_one(change).await? {
                (Some(c), conflicts) => (c, conflicts),
                (None, _) => return Ok(()),
            }
        } else {
            (change, Vec::new())
        };
        // Deferred constraints are checked at the row, not at the commit: a violation found
        // at COMMIT would fail the whole careful transaction again and again.
        self.client
            .batch_execute("SET CONSTRAINTS ALL IMMEDIATE; SAVEPOINT duplex_row")
            .await
            .map_err(|e| Error::from_pg(e, true, "setting a savepoint"))?;
        let table = change.table;
        let kind = change.kind;
        self.note_key(&change);
        let written = match change.pivot {
            Some(cell) => self.write_pivot(table, std::slice::from_ref(&*cell)).await,
            None if cas => self.write_own_cas(vec![change]).await,
            None => {
                self.write_values(table, kind, std::slice::from_ref(&change.row))
                    .await
            }
        };
        match written {
            Ok(()) => {
                self.conflicts.extend(conflicts);
                self.client
                    .batch_execute("RELEASE SAVEPOINT duplex_row")
                    .await
                    .map_err(|e| Error::from_pg(e, true, "releasing a savepoint"))
            }
            Err(e) if !e.is_transient() => {
                self.client
                    .batch_execute("ROLLBACK TO SAVEPOINT duplex_row")
                    .await
                    .map_err(|e| Error::from_pg(e, true, "rolling back to a savepoint"))?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the dead letters recorded since the last commit, with `mark`'s position text.
    pub(super) async fn write_letters(&mut self, mark: &Mark<'_>) -> Result<()> {
        let position_text = mark.position_text();
        for l in std::mem::take(&mut self.letters) {
            self.client
                .execute(
                    &self.dead_letter_stmt,
                    &[
                        &self.pipeline,
                        &crate::model::FORWARD,
                        &l.source_table,
                        &l.target_table,
                        &l.op,
                        &position_text,
                        &l.txn_id,
                        &l.row,
                        &l.reason,
                    ],
                )
                .await
                .map_err(|e| Error::from_pg(e, true, "writing a dead letter"))?;
            metrics::counter!(crate::telemetry::DEAD_LETTERS, "direction" => crate::model::FORWARD, "table" => l.target_table.clone())
                .increment(1);
        }
        Ok(())
    }
}
