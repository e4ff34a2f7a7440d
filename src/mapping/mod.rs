//! Declarative mappings: TOML files in `mappings/<set>/*.toml` say which source table feeds which
//! target table, under which key, with which columns renamed.
//!
//! [`spec`] is the file format (every value keeps its span, so errors point at file and line);
//! [`compile`] turns a set of files plus the live schemas of both databases into a typed [`Plan`]
//! — or into a list of errors, each naming file, line and key. `duplex check` and `duplex run`
//! run exactly the same compilation.

pub mod compile;
pub mod spec;

pub use compile::{compile, convertible, ColumnPlan, Plan, TablePlan, TargetTable};
pub use spec::{load_dir, ColumnsMode, Direction, MappingSet};
