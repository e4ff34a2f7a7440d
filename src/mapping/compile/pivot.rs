//! The pivot step of a table entry (`[table.pivot]`): an EAV source whose rows (key, property
//! code, value) fill columns of the target row with that key.
//!
//! Checks that the name and value columns exist, that the key is one named column, and that each
//! code's entries feed existing target columns, forward only, with a transform whose output fits,
//! no column fed by a column entry too, and one priority per code and column. Builds on the
//! entry's state ([`super::table::Entry`]); uses [`super::convert`] and the transforms.

use std::collections::HashMap;

use super::convert::check_fit;
use super::table::Entry;
use super::{PivotPlan, PivotTarget};
use crate::mapping::spec::{ColumnTable, Direction};
use crate::model::{ColumnSchema, TargetColumn};

/// What the codes of a pivot have built so far.
#[derive(Default)]
struct PivotCodes {
    /// The target columns fed ([`PivotPlan::columns`]).
    columns: Vec<TargetColumn>,
    codes: HashMap<String, Vec<PivotTarget>>,
    /// (column, priority) → the code feeding that column with that priority.
    priorities: HashMap<(usize, i32), String>,
}

impl Entry<'_> {
    /// The pivot, if the entry has one (and its name and value columns exist).
    pub(super) fn pivot(&mut self, key: &[usize]) -> Option<PivotPlan> {
        let (spec, source) = (self.spec, self.source);
        let p = spec.pivot.as_ref()?;
        let at = self.ctx.at(p.span(), ".pivot");
        let p = p.get_ref();
        let name_slot = self.pivot_slot(&p.name, &at);
        let value_slot = self.pivot_slot(&p.value, &at);
        if key.len() != 1 && spec.key.is_some() {
            self.errors.push(format!("{at}: a pivot needs a one-column key (the row it fills, like key = [\"ORDER_ID\"])"));
        }
        if spec.key.is_none() {
            self.errors.push(format!("{at}: a pivot needs key = [\"<column naming the target row>\"], like key = [\"ORDER_ID\"]"));
        }
        let value_ty = value_slot.map(|_| {
            let i = source.column_index(&p.value).expect("checked");
            source.columns[i].clone()
        });
        let mut built = PivotCodes::default();
        for (code, c) in &p.code {
            let cat = self
                .ctx
                .at(code.span(), &format!(".pivot.code.{}", code.get_ref()));
            for e in c.get_ref().entries() {
                if e.skip {
                    continue;
                }
                if let Err(msg) =
                    self.pivot_code(&mut built, code.get_ref(), &e, &cat, value_ty.as_ref())
                {
                    self.errors.push(msg);
                }
            }
        }
        Some(PivotPlan {
            name_slot: name_slot?,
            value_slot: value_slot?,
            codes: built.codes,
            columns: built.columns,
        })
    }

    /// The slot of the pivot's name or value column, or `None` and the error that it does not
    /// exist.
    fn pivot_slot(&mut self, name: &str, at: &str) -> Option<usize> {
        let source = self.source;
        match source.column_index(name) {
            Some(i) => Some(self.slot(&source.columns[i].name)),
            None => {
                self.errors.push(format!(
                    "{at}: column {name} does not exist in source table {}",
                    source.name
                ));
                None
            }
        }
    }

    /// One entry of a property code (at `cat`), added to `built`.
    fn pivot_code(
        &self,
        built: &mut PivotCodes,
        code: &str,
        e: &ColumnTable,
        cat: &str,
        value_ty: Option<&ColumnSchema>,
    ) -> Result<(), String> {
        let target = self.target;
        let Some(tgt) = e.to.clone() else {
            return Err(format!("{cat}: name the target column with to = \"...\""));
        };
        let Some(tcol) = target.column(&tgt) else {
            return Err(format!(
                "{cat}: target column {tgt} does not exist in {}",
                target.name
            ));
        };
        if e.direction.is_some_and(|d| d != Direction::Forward) {
            return Err(format!("{cat}: pivoted columns go forward only"));
        }
        let transform = self.ctx.transform(e, cat)?;
        if let Some(v) = value_ty {
            check_fit(
                &transform,
                &v.ty,
                &format!("{} column {}", v.ty.describe(), v.name),
                target,
                tcol,
            )
            .map_err(|msg| format!("{cat}: {msg}"))?;
        }
        let column = match built.columns.iter().position(|x| x.name == tgt) {
            Some(i) => i,
            None => {
                if self.target_seen.contains_key(&tgt) {
                    return Err(format!(
                        "{cat}: target column {tgt} is also fed by a column entry"
                    ));
                }
                built.columns.push(tcol.clone());
                built.columns.len() - 1
            }
        };
        let priority = e.priority.unwrap_or(0);
        if let Some(prev) = built
            .priorities
            .insert((column, priority), code.to_string())
        {
            return Err(format!(
                "{cat}: codes {prev} and {code} both feed {tgt} with priority {priority}: give them different priorities (lower wins)"
            ));
        }
        built
            .codes
            .entry(code.to_string())
            .or_default()
            .push(PivotTarget {
                column,
                priority,
                transform,
            });
        Ok(())
    }
}
