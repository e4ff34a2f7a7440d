//! The steps of a table entry that read its source row: column entries (`[table.column]`, and
//! every other column with `columns = "all"`), constants (`[table.set]`), packed jsonb columns
//! (`[table.pack]`) and the row filter (`[table.filter]`).
//!
//! Checks that source and target columns exist, that transforms are known and their output
//! converts to the target column, that a column going back to MySQL can be read backwards, and
//! that each target column has one feeder. Builds on the entry's state ([`super::table::Entry`]);
//! uses [`super::convert`], the file format and the transforms.

use std::ops::Range;

use super::convert::{check_fit, toml_value, type_of};
use super::table::Entry;
use super::{ColumnPlan, ColumnSource, Filter, FilterTest};
use crate::mapping::spec::{ColumnTable, ColumnsMode, Conflict, Direction, FilterSpec, PackSpec};
use crate::mapping::transform::Transform;
use crate::model::TargetKind;

/// A source column a column entry maps, and where the entry was written.
pub(super) struct Wanted {
    /// The source column, by its name in the source table.
    source: String,
    entry: ColumnTable,
    /// The key path (`.column.<name>`, or `.columns`) and its span, for messages.
    key: String,
    span: Range<usize>,
}

impl Entry<'_> {
    /// Which source columns go where: each column entry whose source column exists (skipped
    /// entries left out), then with `columns = "all"` every source column not named.
    pub(super) fn wanted_columns(&mut self, mode: ColumnsMode) -> Vec<Wanted> {
        let (spec, source) = (self.spec, self.source);
        let mut wanted = Vec::new();
        for (name, col) in &spec.column {
            let key = format!(".column.{}", name.get_ref());
            let Some(si) = source.column_index(name.get_ref()) else {
                self.errors.push(format!(
                    "{}: column {} does not exist in source table {}",
                    self.ctx.at(name.span(), &key),
                    name.get_ref(),
                    source.name
                ));
                continue;
            };
            let real = source.columns[si].name.clone();
            self.named.insert(real.clone());
            for e in col.get_ref().entries() {
                if !e.skip {
                    wanted.push(Wanted {
                        source: real.clone(),
                        entry: e,
                        key: key.clone(),
                        span: name.span(),
                    });
                }
            }
        }
        if mode == ColumnsMode::All {
            for c in &source.columns {
                if !self.named.contains(&c.name) {
                    self.named.insert(c.name.clone());
                    wanted.push(Wanted {
                        source: c.name.clone(),
                        entry: ColumnTable::default(),
                        key: ".columns".into(),
                        span: spec
                            .columns
                            .as_ref()
                            .map(|s| s.span())
                            .unwrap_or(spec.source.span()),
                    });
                }
            }
        }
        wanted
    }

    /// Maps each wanted source column to its target column.
    pub(super) fn map_columns(&mut self, wanted: Vec<Wanted>) {
        for w in wanted {
            let at = self.ctx.at(w.span, &w.key);
            if let Err(e) = self.map_column(&w.source, &w.entry, &at) {
                self.errors.push(e);
            }
        }
    }

    /// One source column → one target column: the target column exists, the transform is known
    /// and its output fits, the column's direction is allowed and (going back to MySQL)
    /// reversible, and nothing else feeds the target column.
    fn map_column(&mut self, src: &str, e: &ColumnTable, at: &str) -> Result<(), String> {
        let (source, target, direction) = (self.source, self.target, self.direction);
        let si = source.column_index(src).expect("checked above");
        let scol = &source.columns[si];
        let tgt = e.target_name(src).expect("skipped entries are left out");
        let Some(tcol) = target.column(&tgt) else {
            return Err(format!(
                "{at}: target column {tgt} does not exist in {} (source column {})",
                target.name, scol.name
            ));
        };
        if e.priority.is_some() {
            return Err(format!(
                "{at}: priority belongs to pivot codes ([table.pivot.code])"
            ));
        }
        let transform = self.ctx.transform(e, at)?;
        check_fit(
            &transform,
            &scol.ty,
            &format!(
                "{} column {} ({})",
                scol.ty.describe(),
                scol.name,
                scol.column_type
            ),
            target,
            tcol,
        )
        .map_err(|msg| format!("{at}: {msg}"))?;
        let col_dir = e.direction.unwrap_or(direction);
        if e.direction.is_some() && direction != Direction::Both && col_dir != direction {
            return Err(format!(
                "{at}: a column can go {col_dir:?} only in a table mapped both ways (this table is {direction:?})"
            ));
        }
        if col_dir != Direction::Forward {
            if let Some(why) = transform.one_way() {
                return Err(format!("{at}: this column goes back to MySQL, but {why}"));
            }
        }
        let conflict = self.conflict_policy(e, col_dir, at)?;
        self.claim(&tgt, &scol.name, at)?;
        let from = ColumnSource::Column(self.slot(&scol.name));
        self.columns.push(ColumnPlan {
            source_name: scol.name.clone(),
            from,
            transform,
            target: tcol.clone(),
            reverse: col_dir != Direction::Forward,
            conflict,
        });
        Ok(())
    }

    /// Who wins a conflict on a column: its own `conflict`, else the table's, else `crm`; only
    /// a column going both ways has one.
    fn conflict_policy(
        &self,
        e: &ColumnTable,
        col_dir: Direction,
        at: &str,
    ) -> Result<Option<Conflict>, String> {
        let table = self.spec.conflict.as_ref().map(|c| *c.get_ref());
        if col_dir != Direction::Both {
            return match e.conflict {
                Some(_) => Err(format!(
                    "{at}: conflict applies to columns going both ways; this one goes {col_dir:?}"
                )),
                None => Ok(None),
            };
        }
        Ok(Some(e.conflict.or(table).unwrap_or_default()))
    }

    /// Constants (`[table.set]`).
    pub(super) fn set_constants(&mut self) {
        self.each("set", &self.spec.set, Self::set_constant);
    }

    /// One constant: the target column exists, the value is a scalar that fits it, and nothing
    /// else feeds it.
    fn set_constant(&mut self, name: &str, v: &toml::Value, at: &str) -> Result<(), String> {
        let target = self.target;
        let tcol = target.named(name, at)?;
        let value = toml_value(v).map_err(|e| format!("{at}: {e}"))?;
        let none = Transform::default();
        check_fit(
            &none,
            &type_of(&value),
            &format!("the constant {value}"),
            target,
            tcol,
        )
        .map_err(|msg| format!("{at}: {msg}"))?;
        self.claim(name, "a constant", at)?;
        self.columns.push(ColumnPlan {
            source_name: "set".into(),
            from: ColumnSource::Const(value),
            transform: none,
            target: tcol.clone(),
            reverse: false,
            conflict: None,
        });
        Ok(())
    }

    /// Packed jsonb columns (`[table.pack]`).
    pub(super) fn pack_columns(&mut self) {
        self.each("pack", &self.spec.pack, Self::pack_column);
    }

    /// One packed column: a json or jsonb target column fed by nothing else, packing the listed
    /// source columns (each missing one is an error of its own) or `"rest"`, those not named.
    fn pack_column(&mut self, name: &str, p: &PackSpec, at: &str) -> Result<(), String> {
        let (source, target) = (self.source, self.target);
        let tcol = target.named(name, at)?;
        if !matches!(tcol.kind, TargetKind::Json | TargetKind::Jsonb) {
            return Err(format!(
                "{at}: pack writes a json object, but {}.{} is {}",
                target.name, tcol.name, tcol.type_name
            ));
        }
        let names: Vec<String> = match p {
            PackSpec::Rest(r) if r == "rest" => source
                .columns
                .iter()
                .filter(|c| !self.named.contains(&c.name))
                .map(|c| c.name.clone())
                .collect(),
            PackSpec::Rest(other) => {
                return Err(format!(
                    "{at}: expected a list of source columns or \"rest\", found {other:?}"
                ));
            }
            PackSpec::Columns(list) => {
                let mut out = Vec::new();
                for c in list {
                    match source.column_index(c) {
                        Some(i) => out.push(source.columns[i].name.clone()),
                        None => self.errors.push(format!(
                            "{at}: column {c} does not exist in source table {}",
                            source.name
                        )),
                    }
                }
                out
            }
        };
        self.claim(name, "pack", at)?;
        let cols = names.iter().map(|n| (n.clone(), self.slot(n))).collect();
        self.columns.push(ColumnPlan {
            source_name: "pack".into(),
            from: ColumnSource::Pack(cols),
            transform: Transform::default(),
            target: tcol.clone(),
            reverse: false,
            conflict: None,
        });
        Ok(())
    }

    /// The row filter (`[table.filter]`).
    pub(super) fn filters(&mut self) -> Vec<Filter> {
        self.each("filter", &self.spec.filter, Self::filter)
    }

    /// One filter condition: the source column exists, and the test is a value, or exactly one
    /// of `in`, `not_in`, `null`.
    fn filter(&mut self, name: &str, f: &FilterSpec, at: &str) -> Result<Filter, String> {
        let source = self.source;
        let Some(si) = source.column_index(name) else {
            return Err(format!(
                "{at}: column {name} does not exist in source table {}",
                source.name
            ));
        };
        let texts = |list: &[toml::Value]| -> std::result::Result<Vec<String>, String> {
            list.iter()
                .map(|v| toml_value(v).map(|v| v.to_string()))
                .collect()
        };
        let test = match f {
            FilterSpec::Equals(v) => texts(std::slice::from_ref(v)).map(FilterTest::In),
            FilterSpec::Test(t) => match (&t.in_, &t.not_in, t.null) {
                (Some(l), None, None) => texts(l).map(FilterTest::In),
                (None, Some(l), None) => texts(l).map(FilterTest::NotIn),
                (None, None, Some(n)) => Ok(FilterTest::Null(n)),
                _ => Err("give exactly one of in, not_in, null".to_string()),
            },
        }
        .map_err(|e| format!("{at}: {e}"))?;
        let column = source.columns[si].name.clone();
        Ok(Filter {
            slot: self.slot(&column),
            column,
            test,
        })
    }
}
