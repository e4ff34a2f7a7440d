//! `newest` columns on PostgreSQL (see `state::newest`): each Bitrix change of such a column
//! writes Bitrix's half into `<duplex_schema>.newest` and sends it on to the reverse direction
//! as a transactional logical message, in the transaction that applies the change; each CRM
//! half the reverse direction reports (a row of MySQL's `newest` table read back from its own
//! transaction) is stored, and the column is set to the newer change's value where the row holds
//! one of the two known values.
//!
//! Owns [`Note`] and the relay's application. Uses the sink's connection, the plan and the
//! conflict log type.

use std::sync::Arc;

use tokio_postgres::Statement;

use super::encode::{Cell, EncodedRow};
use super::{Guard, PgChange, PgSink};
use crate::error::{Error, Result};
use crate::mapping::spec::Conflict as Policy;
use crate::model::{pg_ident, pg_literal};
use crate::state::newest::{self, Decided, Relay};

/// Bitrix's half of one `newest` column, to write in the open transaction, and the column to
/// decide afterwards.
#[derive(Debug, Clone)]
pub struct Note {
    table: usize,
    column: usize,
    pk: String,
    my_key: Option<String>,
    /// The new value, encoded for the column.
    cell: Option<Vec<u8>>,
    /// The new value in Bitrix's terms.
    source: Option<String>,
    ts: i64,
    /// The row held the change's before value: it is older than the change.
    plain: bool,
    /// For the conflict log: the change's before and new value as text, its transaction.
    texts: (Option<String>, Option<String>),
    txn: String,
}

impl Note {
    /// The half a change of plan table `table` brings for its column `c` (the `j`-th guarded).
    pub fn of(
        table: usize,
        c: usize,
        j: usize,
        guard: &Guard,
        row: &EncodedRow,
        plain: bool,
    ) -> Note {
        Note {
            table,
            column: c,
            pk: guard.key.clone(),
            my_key: guard.my_key.clone(),
            cell: row.cell(c).map(<[u8]>::to_vec),
            source: guard.sources[j].clone(),
            ts: guard.commit_time_us,
            plain,
            texts: guard.texts[j].clone(),
            txn: guard.txn.to_string(),
        }
    }
}

/// The prepared statements of one `newest` column.
pub struct Statements {
    /// Stores Bitrix's half and sends it on: `$1` key, `$2` Bitrix key, `$3` the value (the
    /// column's type), `$4` it in Bitrix's terms, `$5` its time, `$6` the message.
    note: Statement,
    /// Stores the CRM's half: `$1` key, `$2` value, `$3` time.
    crm: Statement,
    /// The row of key `$1` (locked): the column as text; whether it is Bitrix's value, the
    /// CRM's, the one written last; both halves.
    read: Statement,
    /// Sets the column to `$2` (text) in the row of key `$1`, noting it written at `$3`.
    write: Statement,
}

impl PgSink {
    /// The statements of column `c` of plan table `table`, prepared once.
    async fn newest_statements(&mut self, table: usize, c: usize) -> Result<Arc<Statements>> {
        if let Some(s) = self.newest_stmts.get(&(table, c)) {
            return Ok(s.clone());
        }
        let t = self.plan.tables[table].clone();
        let col = &t.columns[c].target;
        let key = &t.columns[t.key[0]].target;
        let (n, ty) = (pg_ident(&col.name), &col.type_name);
        let (k, kty) = (pg_ident(&key.name), &key.type_name);
        let state = format!("{}.{}", pg_ident(&self.duplex_schema), newest::TABLE);
        let target = t.target.pg_quoted();
        let (p, tbl, cn) = (
            pg_literal(&self.pipeline),
            pg_literal(&t.target.to_string()),
            pg_literal(&col.name),
        );
        let this = format!("x.pipeline = {p} AND x.tbl = {tbl} AND x.col = {cn} AND x.pk = $1");
        let is = |v: &str| format!("r.{n} IS NOT DISTINCT FROM CAST(x.{v} AS {ty})");
        let sql = [
            format!(
                "WITH n AS (
                     INSERT INTO {state} (pipeline, tbl, pk, col, my_key, bitrix_value, bitrix_source, bitrix_ts)
                     VALUES ({p}, {tbl}, $1, {cn}, $2, CAST(CAST($3 AS {ty}) AS text), $4, $5)
                     ON CONFLICT (pipeline, tbl, pk, col) DO UPDATE SET my_key = EXCLUDED.my_key,
                         bitrix_value = EXCLUDED.bitrix_value, bitrix_source = EXCLUDED.bitrix_source,
                         bitrix_ts = EXCLUDED.bitrix_ts
                     RETURNING 1)
                 SELECT pg_logical_emit_message(true, {}, $6::text) FROM n",
                pg_literal(newest::MESSAGE_PREFIX)
            ),
            format!(
                "INSERT INTO {state} (pipeline, tbl, pk, col, crm_value, crm_source, crm_ts)
                 VALUES ({p}, {tbl}, $1, {cn}, $2, $2, $3)
                 ON CONFLICT (pipeline, tbl, pk, col) DO UPDATE SET crm_value = EXCLUDED.crm_value,
                     crm_source = EXCLUDED.crm_source, crm_ts = EXCLUDED.crm_ts"
            ),
            format!(
                "SELECT r.{n}::text, {}, {}, x.written_ts IS NOT NULL AND {},
                        x.bitrix_value, x.bitrix_ts, x.crm_value, x.crm_ts
                 FROM {target} r JOIN {state} x ON {this}
                 WHERE r.{k} = CAST($1::text AS {kty}) FOR UPDATE OF r",
                is("bitrix_value"),
                is("crm_value"),
                is("written")
            ),
            format!(
                "WITH w AS (UPDATE {state} x SET written = $2, written_ts = $3 WHERE {this} RETURNING 1)
                 UPDATE {target} SET {n} = CAST($2::text AS {ty}) WHERE {k} = CAST($1::text AS {kty})"
            ),
        ];
        let mut prepared = Vec::with_capacity(sql.len());
        for q in &sql {
            let stmt = self.client.prepare(q).await.map_err(|e| {
                Error::from_pg(
                    e,
                    true,
                    &format!(
                        "preparing the newest-change statements of {}.{} (run `duplex setup`)",
                        t.target, col.name
                    ),
                )
            })?;
            prepared.push(stmt);
        }
        let [note, crm, read, write]: [Statement; 4] =
            prepared.try_into().expect("four statements");
        let s = Arc::new(Statements {
            note,
            crm,
            read,
            write,
        });
        self.newest_stmts.insert((table, c), s.clone());
        Ok(s)
    }

    /// Writes the halves noted so far (and sends them on), then decides their columns.
    pub(super) async fn write_notes(&mut self) -> Result<()> {
        let notes = std::mem::take(&mut self.notes);
        for note in &notes {
            let st = self.newest_statements(note.table, note.column).await?;
            let t = &self.plan.tables[note.table];
            let relay = Relay {
                pipeline: self.pipeline.clone(),
                tbl: t.target.to_string(),
                pk: note.pk.clone(),
                col: t.columns[note.column].target.name.clone(),
                my_key: note.my_key.clone(),
                value: note.source.clone(),
                ts: note.ts,
            };
            let message = newest::to_message(&relay);
            self.client
                .execute(
                    &st.note,
                    &[
                        &relay.pk,
                        &relay.my_key,
                        &Cell(note.cell.as_deref()),
                        &relay.value,
                        &relay.ts,
                        &message,
                    ],
                )
                .await
                .map_err(|e| Error::from_pg(e, true, "storing a newest-change half"))?;
        }
        for note in notes {
            let Some(d) = self
                .settle(note.table, note.column, &note.pk, note.plain)
                .await?
            else {
                continue;
            };
            if note.plain || !d.both() {
                continue; // Bitrix's change replaced an older value: no conflict
            }
            let t = &self.plan.tables[note.table];
            let row = (
                t.target.to_string(),
                note.pk,
                t.columns[note.column].target.name.clone(),
            );
            let change = Some((note.texts.0, note.txn));
            self.conflicts.push(d.conflict(row, true, change));
        }
        Ok(())
    }

    /// Sets column `c` of the row of key `pk` to the newer change's value, where it holds a
    /// value placed in time (`plain`: the row held the before value of the change just
    /// stored); `Some` when it wrote.
    async fn settle(
        &mut self,
        table: usize,
        c: usize,
        pk: &str,
        plain: bool,
    ) -> Result<Option<Decided>> {
        let st = self.newest_statements(table, c).await?;
        let what = |e| Error::from_pg(e, true, "deciding a newest-change column");
        let Some(row) = self
            .client
            .query_opt(&st.read, &[&pk])
            .await
            .map_err(what)?
        else {
            return Ok(None);
        };
        let found = newest::Found {
            plain,
            is_bitrix: row.get(1),
            is_crm: row.get(2),
            is_written: row.get(3),
            bitrix: (row.get(4), row.get(5)),
            crm: (row.get(6), row.get(7)),
        };
        let (bitrix_ts, crm_ts) = (found.bitrix.1, found.crm.1);
        let Some((crm, value, ts)) = found.choose() else {
            return Ok(None);
        };
        self.client
            .execute(&st.write, &[&pk, &value, &ts])
            .await
            .map_err(what)?;
        Ok(Some(Decided {
            current: row.get(0),
            written: value,
            crm,
            bitrix_ts,
            crm_ts,
        }))
    }

    /// Stores the CRM half the reverse direction reports and decides the column again.
    pub(super) async fn apply_relay(&mut self, change: PgChange) -> Result<()> {
        let relay = change.relay.expect("a relay");
        let t = self.plan.tables[change.table].clone();
        let Some(c) = t.guarded().iter().copied().find(|&c| {
            t.columns[c].target.name == relay.col && t.columns[c].conflict == Some(Policy::Newest)
        }) else {
            return Ok(()); // the mapping no longer has that column as `newest`
        };
        let st = self.newest_statements(change.table, c).await?;
        self.client
            .execute(&st.crm, &[&relay.pk, &relay.value, &relay.ts])
            .await
            .map_err(|e| Error::from_pg(e, true, "storing a newest-change half of the CRM"))?;
        let decided = self.settle(change.table, c, &relay.pk, false).await?;
        let Some(d) = decided.filter(Decided::both) else {
            return Ok(()); // nothing written, or only catching up with the CRM's own changes
        };
        let row = (t.target.to_string(), relay.pk.clone(), relay.col.clone());
        self.conflicts.push(d.conflict(row, true, None));
        Ok(())
    }
}
