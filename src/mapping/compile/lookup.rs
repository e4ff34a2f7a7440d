//! The look-up step of a table entry (`[table.lookup]`): target columns filled from another
//! PostgreSQL table through a natural key the entry writes.
//!
//! Checks that the column written exists, is nullable (a row may arrive before the row it refers
//! to) and is fed by nothing else; that the natural key is a column this entry writes; and that
//! the other table exists, with a unique natural-key column and a taken column of the same kind.
//! Builds on the entry's state ([`super::table::Entry`]) and the set's target tables.

use super::table::Entry;
use super::{LookupPlan, PivotPlan};
use crate::mapping::spec::LookupSpec;
use crate::model::TableName;

impl Entry<'_> {
    /// The look-ups; `pivot` is the entry's pivot, whose columns may hold the natural key.
    pub(super) fn lookups(&mut self, pivot: Option<&PivotPlan>) -> Vec<LookupPlan> {
        let spec = self.spec;
        let mut lookups = Vec::new();
        for (name, l) in &spec.lookup {
            let at = self
                .ctx
                .at(name.span(), &format!(".lookup.{}", name.get_ref()));
            lookups.extend(self.lookup(name.get_ref(), l.get_ref(), &at, pivot));
        }
        lookups
    }

    /// One look-up, or `None` and its errors (there may be several).
    fn lookup(
        &mut self,
        name: &str,
        l: &LookupSpec,
        at: &str,
        pivot: Option<&PivotPlan>,
    ) -> Option<LookupPlan> {
        let (ctx, target) = (self.ctx, self.target);
        let tcol = match target.named(name, at) {
            Ok(c) => c,
            Err(e) => {
                self.errors.push(e);
                return None;
            }
        };
        if !tcol.nullable {
            self.errors.push(format!(
                "{at}: {}.{} is NOT NULL, but a row may arrive before the row it refers to and waits with NULL there: make the column nullable",
                target.name, tcol.name
            ));
        }
        let written = self.columns.iter().any(|c| c.target.name == l.from)
            || pivot.is_some_and(|p| p.columns.iter().any(|c| c.name == l.from));
        if !written {
            self.errors.push(format!(
                "{at}: from = {:?} must be a target column this entry writes (the natural key it holds)",
                l.from
            ));
        }
        if self.target_seen.contains_key(name) {
            self.errors.push(format!(
                "{at}: target column {name} is also fed by a column entry"
            ));
        }
        let table = TableName::parse(&l.table, ctx.target_schema);
        let Some(other) = ctx.targets.get(&table) else {
            self.errors
                .push(format!("{at}: table {table} does not exist in PostgreSQL"));
            return None;
        };
        match (other.column(&l.match_), other.column(&l.take)) {
            (None, _) => self.errors.push(format!(
                "{at}: column {} does not exist in {table}",
                l.match_
            )),
            (_, None) => self
                .errors
                .push(format!("{at}: column {} does not exist in {table}", l.take)),
            (Some(_), Some(take)) => {
                if !other.is_unique(std::slice::from_ref(&l.match_)) {
                    self.errors.push(format!(
                        "{at}: {table}.{} has no unique index, so a natural key could name several rows",
                        l.match_
                    ));
                } else if take.kind != tcol.kind {
                    self.errors.push(format!(
                        "{at}: {table}.{} is {}, but {}.{} is {}",
                        l.take, take.type_name, target.name, tcol.name, tcol.type_name
                    ));
                } else {
                    return Some(LookupPlan {
                        column: tcol.clone(),
                        from: l.from.clone(),
                        table,
                        match_: l.match_.clone(),
                        take: l.take.clone(),
                    });
                }
            }
        }
        None
    }
}
