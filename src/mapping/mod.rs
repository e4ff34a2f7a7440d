//! Declarative mappings: TOML files in `mappings/<set>/*.toml` say which source table feeds which
//! target table, under which key, with which columns renamed.
//!
//! [`spec`] is the file format (every value keeps its span, so errors point at file and line);
//! [`compile`] turns a set of files plus the live schemas of both databases into a typed [`Plan`]
//! — or into a list of errors, each naming file, line and key; [`load`] reads the live schemas
//! and compiles, so `duplex check` and `duplex run` run exactly the same compilation.
//!
//! May use: the model, the configuration, the error type, and (for loading) `catalog` and
//! `connect`; the sources, sinks, snapshot, pipeline and commands use it.

pub mod compile;
pub mod load;
pub mod offline;
pub mod reverse;
pub mod spec;
pub mod transform;

pub use compile::{
    compile, convertible, ColumnPlan, ColumnSource, LookupPlan, PivotPlan, Plan, TablePlan,
    TargetTable,
};
pub use load::{load_plan, recheck_plan};
pub use reverse::{ReversePlan, SetColumn};
pub use spec::{load_dir, ColumnsMode, Direction, MappingSet, OnDelete, ReverseWrite};

/// Per table version (the `Arc` of the schema a row was decoded with), where each mapped column
/// sits in the row: worked out once per version, also when it failed.
#[derive(Default)]
pub struct Bindings {
    /// (plan table, schema address) → (the schema, kept so the address stays unique; binding)
    cache: std::collections::HashMap<
        (usize, usize),
        (std::sync::Arc<crate::model::TableSchema>, Binding),
    >,
}

/// Source column positions of one table version, or why there are none.
type Binding = std::result::Result<std::sync::Arc<Vec<usize>>, String>;

impl Bindings {
    /// The binding of plan table `t` for `schema`, computed with `bind` the first time.
    pub fn get(
        &mut self,
        t: usize,
        schema: &std::sync::Arc<crate::model::TableSchema>,
        bind: impl FnOnce(&crate::model::TableSchema) -> std::result::Result<Vec<usize>, String>,
    ) -> crate::error::Result<std::sync::Arc<Vec<usize>>> {
        let key = (t, std::sync::Arc::as_ptr(schema) as usize);
        let (_, b) = self.cache.entry(key).or_insert_with(|| {
            let b = bind(schema).map(std::sync::Arc::new);
            if let Err(e) = &b {
                tracing::error!(error = %e, "source table changed incompatibly; its rows go to the dead-letter table");
            }
            (schema.clone(), b)
        });
        b.clone().map_err(crate::error::Error::mapping)
    }
}
