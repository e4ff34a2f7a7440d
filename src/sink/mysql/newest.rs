//! `newest` columns on MySQL (see `state::newest`): each CRM change of such a column writes the
//! CRM's half into MySQL's `newest` table in the transaction that applies it (the forward
//! direction reads that row back from the binlog); each Bitrix half the forward direction
//! reports (a logical message in its own transaction) is stored, and the column is set to the
//! newer change's value where the row holds one of the two known values.
//!
//! Owns [`Note`], the relay's making in the encoder and its application. Uses the sink's
//! connection and writer, the reverse plan and the conflict log type.

use mysql_async::prelude::Queryable;
use mysql_async::Value as My;

use super::guard::{text_of, MyGuard};
use super::{my_err, MyChange, MyEncoder, MyKind, MySqlSink};
use crate::error::Result;
use crate::mapping::spec::Conflict as Policy;
use crate::mapping::ReversePlan;
use crate::model::{my_ident, RowChange, Value};
use crate::state::newest::{self, Decided, Relay};

/// The CRM's half of one `newest` column, to write in the open transaction, and the column to
/// decide afterwards.
#[derive(Debug, Clone)]
pub struct Note {
    table: usize,
    column: usize,
    pk: String,
    my_key: Option<String>,
    /// The new value in Bitrix's terms.
    value: Option<String>,
    /// The new value in the CRM's terms.
    source: Option<String>,
    ts: i64,
    /// The row held the change's before value: it is older than the change.
    plain: bool,
    /// The change time for the `reverse_set` columns.
    at: Vec<My>,
    /// For the conflict log: the change's before value, its transaction.
    before: Option<String>,
    txn: String,
}

impl Note {
    /// The half a change brings for its column `c` (the `j`-th guarded), whose new value in
    /// MySQL's terms is `new`.
    pub fn of(change: &MyChange, c: usize, j: usize, g: &MyGuard, new: &My, plain: bool) -> Note {
        Note {
            table: change.table,
            column: c,
            pk: g.pk.clone(),
            my_key: g.my_key.clone(),
            value: text_of(new),
            source: g.sources[j].clone(),
            ts: g.commit_time_us,
            plain,
            at: change.at.clone(),
            before: g.before[j].as_ref().and_then(|(b, _)| text_of(b)),
            txn: g.txn.clone(),
        }
    }
}

/// What deciding a column is called in errors.
const SETTLE: &str = "deciding a newest-change column";

impl MyEncoder {
    /// The change a relay message of the forward direction becomes (duplex's own transactions
    /// only; another pipeline's are not ours).
    pub(super) fn relay(&self, change: &RowChange) -> Option<MyChange> {
        let Some(Value::Text(text)) = change.after.as_ref()?.first() else {
            return None;
        };
        let relay = newest::from_message(text.as_bytes()).filter(|_| self.own)?;
        if relay.pipeline != self.pipeline {
            return None;
        }
        let i = self
            .plan
            .reverse
            .iter()
            .position(|t| t.source.to_string() == relay.tbl)?;
        let t = &self.plan.reverse[i];
        Some(MyChange {
            table: i,
            kind: MyKind::Relay,
            values: vec![None; t.columns.len()],
            at: self.at(t),
            same: Vec::new(),
            guard: None,
            relay: Some(Box::new(relay)),
        })
    }
}

impl MySqlSink {
    /// A text value as an SQL literal.
    pub(super) fn text_literal(&self, s: &str) -> String {
        self.literal(&My::Bytes(s.as_bytes().to_vec()))
    }

    fn opt_literal(&self, s: &Option<String>) -> String {
        s.as_deref()
            .map_or_else(|| "NULL".into(), |s| self.text_literal(s))
    }

    /// `pipeline = … AND tbl = … AND pk = … AND col = …` of one column's state row (alias `x`).
    fn state_row(&self, t: &ReversePlan, c: usize, pk: &str) -> String {
        format!(
            "x.pipeline = {} AND x.tbl = {} AND x.pk = {} AND x.col = {}",
            self.text_literal(&self.pipeline),
            self.text_literal(&t.source.to_string()),
            self.text_literal(pk),
            self.text_literal(&t.columns[c].pg_name)
        )
    }

    /// Writes the halves noted so far (one multi-statement query), then decides their columns.
    pub(super) async fn write_notes(&mut self) -> Result<()> {
        if self.notes.is_empty() {
            return Ok(());
        }
        let notes = std::mem::take(&mut self.notes);
        let mut sql = Vec::new();
        for n in &notes {
            let t = &self.plan.reverse[n.table];
            sql.push(format!(
                "INSERT INTO {}.{} (pipeline, tbl, pk, col, my_key, crm_value, crm_source, crm_ts)
                 VALUES ({}, {}, {}, {}, {}, {}, {}, {})
                 ON DUPLICATE KEY UPDATE my_key = VALUES(my_key), crm_value = VALUES(crm_value),
                     crm_source = VALUES(crm_source), crm_ts = VALUES(crm_ts)",
                my_ident(&self.db),
                newest::TABLE,
                self.text_literal(&self.pipeline),
                self.text_literal(&t.source.to_string()),
                self.text_literal(&n.pk),
                self.text_literal(&t.columns[n.column].pg_name),
                self.opt_literal(&n.my_key),
                self.opt_literal(&n.value),
                self.opt_literal(&n.source),
                n.ts
            ));
        }
        self.conn
            .query_drop(sql.join(";\n"))
            .await
            .map_err(|e| my_err(e, "storing newest-change halves"))?;
        for n in notes {
            let Some(my_key) = n.my_key.clone() else {
                continue;
            };
            let decided = self
                .settle(n.table, n.column, &n.pk, &my_key, n.plain, n.at.clone())
                .await?;
            let Some(d) = decided.filter(|d| !n.plain && d.both()) else {
                continue; // nothing written, or the CRM's change replaced an older value
            };
            let t = &self.plan.reverse[n.table];
            let row = (
                t.target.to_string(),
                my_key,
                t.columns[n.column].my.name.clone(),
            );
            self.conflicts
                .push(d.conflict(row, false, Some((n.before, n.txn))));
        }
        Ok(())
    }

    /// Column `c` of the row of Bitrix key `my_key` (locked) and its state row `this` in
    /// `state` (`plain`: see [`newest::Found`]): `None` when either is missing.
    async fn read_newest(
        &mut self,
        t: &ReversePlan,
        c: usize,
        state: &str,
        this: &str,
        my_key: &str,
        plain: bool,
    ) -> Result<Option<(My, newest::Found)>> {
        let n = my_ident(&t.columns[c].my.name);
        let k = my_ident(&t.columns[t.key[0]].my.name);
        let sql = format!(
            "SELECT r.{n}, COALESCE(r.{n} <=> x.bitrix_value, 0), COALESCE(r.{n} <=> x.crm_value, 0),
                    x.written_ts IS NOT NULL AND COALESCE(r.{n} <=> x.written, 0),
                    x.bitrix_value, x.bitrix_ts, x.crm_value, x.crm_ts
             FROM {target} r JOIN {state} x ON {this}
             WHERE r.{k} = {mk} FOR UPDATE",
            target = t.target.my_quoted(),
            mk = self.text_literal(my_key),
        );
        let row: Option<mysql_async::Row> = self
            .conn
            .query_first(sql)
            .await
            .map_err(|e| my_err(e, SETTLE))?;
        let Some(mut row) = row else {
            return Ok(None);
        };
        let flag = |v: Option<Option<i64>>| v.flatten().unwrap_or(0) != 0;
        let found = newest::Found {
            plain,
            is_bitrix: flag(row.take(1)),
            is_crm: flag(row.take(2)),
            is_written: flag(row.take(3)),
            bitrix: (
                row.take::<Option<String>, _>(4).flatten(),
                row.take::<Option<i64>, _>(5).flatten(),
            ),
            crm: (
                row.take::<Option<String>, _>(6).flatten(),
                row.take::<Option<i64>, _>(7).flatten(),
            ),
        };
        Ok(Some((row.take::<My, _>(0).unwrap_or(My::NULL), found)))
    }

    /// Sets column `c` of the row of Bitrix key `my_key` (CRM key `pk`) to the newer change's
    /// value, where it holds a value placed in time (`plain`: the row held the before value of
    /// the change just stored); `Some` when it wrote.
    async fn settle(
        &mut self,
        table: usize,
        c: usize,
        pk: &str,
        my_key: &str,
        plain: bool,
        at: Vec<My>,
    ) -> Result<Option<Decided>> {
        let t = self.plan.reverse[table].clone();
        let state = format!("{}.{}", my_ident(&self.db), newest::TABLE);
        let this = self.state_row(&t, c, pk);
        let Some((current, found)) = self
            .read_newest(&t, c, &state, &this, my_key, plain)
            .await?
        else {
            return Ok(None);
        };
        let (bitrix_ts, crm_ts) = (found.bitrix.1, found.crm.1);
        let Some((crm, value, ts)) = found.choose() else {
            return Ok(None);
        };
        let mut values = vec![None; t.columns.len()];
        values[t.key[0]] = Some(My::Bytes(my_key.as_bytes().to_vec()));
        values[c] = Some(
            value
                .as_ref()
                .map_or(My::NULL, |v| My::Bytes(v.clone().into_bytes())),
        );
        let write = MyChange {
            table,
            kind: MyKind::Update,
            values,
            at,
            same: Vec::new(),
            guard: None,
            relay: None,
        };
        self.write_plain(vec![write]).await?;
        let sql = format!(
            "UPDATE {state} x SET written = {}, written_ts = {} WHERE {this}",
            self.opt_literal(&value),
            ts.map_or("NULL".into(), |t| t.to_string())
        );
        self.conn
            .query_drop(sql)
            .await
            .map_err(|e| my_err(e, SETTLE))?;
        Ok(Some(Decided {
            current: text_of(&current),
            written: value,
            crm,
            bitrix_ts,
            crm_ts,
        }))
    }

    /// Stores the Bitrix half the forward direction reports and decides the column again.
    pub(super) async fn apply_relay(&mut self, change: MyChange) -> Result<()> {
        let relay: Relay = *change.relay.clone().expect("a relay");
        let t = self.plan.reverse[change.table].clone();
        let Some(c) = t.guarded().iter().copied().find(|&c| {
            t.columns[c].pg_name == relay.col && t.columns[c].conflict == Some(Policy::Newest)
        }) else {
            return Ok(()); // the mapping no longer has that column as `newest`
        };
        let Some(my_key) = relay.my_key.clone() else {
            return Ok(());
        };
        let value = self.opt_literal(&relay.value);
        let sql = format!(
            "INSERT INTO {}.{} (pipeline, tbl, pk, col, my_key, bitrix_value, bitrix_source, bitrix_ts)
             VALUES ({}, {}, {}, {}, {}, {value}, {value}, {})
             ON DUPLICATE KEY UPDATE my_key = VALUES(my_key), bitrix_value = VALUES(bitrix_value),
                 bitrix_source = VALUES(bitrix_source), bitrix_ts = VALUES(bitrix_ts)",
            my_ident(&self.db),
            newest::TABLE,
            self.text_literal(&self.pipeline),
            self.text_literal(&relay.tbl),
            self.text_literal(&relay.pk),
            self.text_literal(&relay.col),
            self.text_literal(&my_key),
            relay.ts,
        );
        self.conn
            .query_drop(sql)
            .await
            .map_err(|e| my_err(e, "storing a newest-change half of Bitrix"))?;
        let decided = self
            .settle(
                change.table,
                c,
                &relay.pk,
                &my_key,
                false,
                change.at.clone(),
            )
            .await?;
        let Some(d) = decided.filter(Decided::both) else {
            return Ok(()); // nothing written, or only catching up with Bitrix's own changes
        };
        let row = (t.target.to_string(), my_key, t.columns[c].my.name.clone());
        self.conflicts.push(d.conflict(row, false, None));
        Ok(())
    }
}
