//! The handover from a snapshot to streaming: a row change the stream delivers for a copied
//! table is dropped when the copy already holds it, that is when its transaction comes before
//! the snapshot the row's key range was copied from.
//!
//! A table copied in one go has one segment (all keys, one snapshot position). A copy resumed
//! after a crash gets a new snapshot for the rest of its keys: one more segment, starting after
//! the last key copied before. The stream starts from the oldest of these positions, so nothing
//! is missed, and this filter keeps it from re-applying older changes on top of newer copied
//! rows. Where duplex cannot order the key exactly as the database does (text under a
//! collation), a row falls back to the oldest segment: older changes are re-applied to those
//! rows and the stream converges by the time it passes the newest snapshot.

use std::collections::HashMap;

use crate::error::Result;
use crate::model::{Op, Position, RowChange, TableName};

use crate::state::progress::{cmp_key, KeyValue, Progress};

struct TableFilter {
    key_columns: Vec<String>,
    segments: Vec<(Option<Vec<KeyValue>>, Position)>,
    /// The newest snapshot position: transactions at or after it are never covered.
    newest: Position,
    oldest: Position,
}

/// Which streamed row changes a snapshot already holds.
#[derive(Default)]
pub struct SnapshotFilter {
    tables: HashMap<TableName, TableFilter>,
}

impl SnapshotFilter {
    /// Builds the filter from progress rows; `name_of` gives the table name a progress row's
    /// table is streamed under (`None`: no longer mapped). Copies whose newest position the
    /// stream has already passed (`from`, where it starts) can hold nothing it will deliver and
    /// are left out, so a pipeline past its copies does no work here.
    pub fn new(
        progress: &[Progress],
        name_of: impl Fn(&str) -> Option<TableName>,
        from: Option<&Position>,
    ) -> Result<SnapshotFilter> {
        let mut tables = HashMap::new();
        for p in progress {
            let Some(name) = name_of(&p.table) else {
                continue;
            };
            let mut segments = Vec::new();
            for s in &p.segments {
                segments.push((s.from_key.clone(), s.upto()?));
            }
            let Some(newest) = segments
                .iter()
                .map(|(_, at)| at)
                .reduce(|a, b| if b.is_after(a) { b } else { a })
                .cloned()
            else {
                continue;
            };
            if from.is_some_and(|from| !newest.is_after(from)) {
                continue;
            }
            let oldest = segments
                .iter()
                .map(|(_, at)| at)
                .reduce(|a, b| if a.is_after(b) { b } else { a })
                .cloned()
                .expect("not empty");
            tables.insert(
                name,
                TableFilter {
                    key_columns: p.key_columns.clone(),
                    segments,
                    newest,
                    oldest,
                },
            );
        }
        Ok(SnapshotFilter { tables })
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Per copied table, the oldest position its copy was taken at: what came before it in the
    /// stream, the copy holds.
    pub fn oldest_positions(&self) -> HashMap<TableName, Position> {
        self.tables
            .iter()
            .map(|(name, t)| (name.clone(), t.oldest.clone()))
            .collect()
    }

    /// Whether some row of a transaction at `at` may be held by a copy (cheap: one comparison
    /// per copied table, done once per transaction).
    pub fn may_cover(&self, at: &Position) -> bool {
        self.tables.values().any(|t| t.newest.is_after(at))
    }

    /// Whether the copy already holds this change of a transaction at `at`.
    pub fn covers(&self, change: &RowChange, at: Option<&Position>) -> bool {
        let Some(at) = at else { return false };
        let Some(t) = self.tables.get(&change.table.name) else {
            return false;
        };
        if !t.newest.is_after(at) {
            return false;
        }
        if t.segments.len() == 1 {
            return true;
        }
        let image = match change.op {
            Op::Delete => change.before.as_ref(),
            _ => change.after.as_ref(),
        };
        let key: Option<Vec<_>> = image.and_then(|row| {
            t.key_columns
                .iter()
                .map(|c| {
                    change
                        .table
                        .column_index(c)
                        .and_then(|i| row.get(i).cloned())
                })
                .collect()
        });
        let upto = key
            .and_then(|key| {
                let mut found = None;
                for (from, at) in &t.segments {
                    match from {
                        None => found = Some(at),
                        Some(from) => match cmp_key(from, &key)? {
                            std::cmp::Ordering::Less => found = Some(at),
                            _ => break,
                        },
                    }
                }
                found
            })
            .unwrap_or(&t.oldest);
        upto.is_after(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ColumnSchema, Image, SourceType, TableSchema, Value};
    use crate::state::progress::{Progress, Segment};
    use std::sync::Arc;

    fn change(id: i64) -> RowChange {
        RowChange {
            table: Arc::new(TableSchema {
                name: TableName::new("shop", "t"),
                columns: vec![ColumnSchema {
                    name: "ID".into(),
                    ty: SourceType::Int {
                        bytes: 4,
                        unsigned: false,
                    },
                    nullable: false,
                    column_type: "int".into(),
                }],
                primary_key: vec![0],
            }),
            op: Op::Update,
            before: Some(vec![Value::Int(id)]),
            after: Some(vec![Value::Int(id)]),
            image: Image::Full,
        }
    }

    #[test]
    fn rows_follow_the_segment_of_their_key() {
        let p = Progress {
            prune: false,
            table: "shop.t".into(),
            state: crate::state::progress::State::Copying,
            key_columns: vec!["id".into()],
            last_key: None,
            rows_copied: 0,
            rows_dead: 0,
            segments: vec![
                Segment {
                    from_key: None,
                    upto: "mysql:b.000001:1000".into(),
                },
                Segment {
                    from_key: Some(vec![KeyValue::I(100)]),
                    upto: "mysql:b.000001:5000".into(),
                },
            ],
        };
        let f = SnapshotFilter::new(
            std::slice::from_ref(&p),
            |_| Some(TableName::new("shop", "t")),
            None,
        )
        .unwrap();
        let at = |pos: u64| {
            Some(Position::Mysql(crate::model::MysqlPosition::new(
                "b.000001", pos,
            )))
        };
        // Before the first snapshot: in both copies.
        assert!(f.covers(&change(5), at(500).as_ref()));
        assert!(f.covers(&change(500), at(500).as_ref()));
        // Between them: only rows after key 100 were copied later.
        assert!(!f.covers(&change(100), at(2000).as_ref()));
        assert!(f.covers(&change(101), at(2000).as_ref()));
        // After both: streamed.
        assert!(!f.covers(&change(101), at(6000).as_ref()));
        assert!(!f.covers(&change(5), None));
        assert!(f.may_cover(&at(4000).unwrap()) && !f.may_cover(&at(5000).unwrap()));
        // A stream starting at or after the newest copy needs no filter for the table.
        let past = SnapshotFilter::new(
            &[p],
            |_| Some(TableName::new("shop", "t")),
            at(5000).as_ref(),
        )
        .unwrap();
        assert!(past.is_empty());
    }
}
