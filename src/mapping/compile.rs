//! Compiles a [`MappingSet`] against the live schemas into a typed [`Plan`].
//!
//! Every check a mapping can fail is made here, before anything is replicated: tables and columns
//! exist, each column's source type converts to its target type, the key is mapped and backed by
//! a primary key or unique index on the target (upserts need one). All errors are collected and
//! reported together, each as `file:line: key `path`: what is wrong`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::spec::{ColumnsMode, Direction, MappingFile, MappingSet, TableSpec};
use crate::error::{Error, Result};
use crate::model::{SourceType, TableName, TableSchema, TargetColumn, TargetKind, Value};

/// A PostgreSQL table as the compiler needs it.
#[derive(Debug, Clone)]
pub struct TargetTable {
    pub name: TableName,
    pub columns: Vec<TargetColumn>,
    /// Column names of the primary key and of each unique index (no partial/expression ones).
    pub unique_keys: Vec<Vec<String>>,
}

/// One mapped column.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    pub source_name: String,
    pub source_index: usize,
    pub source_type: SourceType,
    pub target: TargetColumn,
}

/// One source table → one target table.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// Where it was declared (`file:line`), for messages.
    pub origin: String,
    pub source: TableName,
    pub target: TableName,
    pub direction: Direction,
    pub columns: Vec<ColumnPlan>,
    /// Indexes into `columns` forming the target's conflict key.
    pub key: Vec<usize>,
    /// The source table version this plan was compiled against.
    pub source_schema: Arc<TableSchema>,
}

impl TablePlan {
    /// Where each mapped column sits in rows of another version of the source table (after an
    /// ALTER TABLE): by name, with the type still convertible. Errors name the column.
    pub fn bind(&self, schema: &TableSchema) -> std::result::Result<Vec<usize>, String> {
        if *schema == *self.source_schema {
            return Ok(self.columns.iter().map(|c| c.source_index).collect());
        }
        self.columns
            .iter()
            .map(|c| {
                let i = schema.column_index(&c.source_name).ok_or_else(|| {
                    format!(
                        "column {} (mapped at {}) no longer exists in source table {}; fix the mapping and reload",
                        c.source_name, self.origin, self.source
                    )
                })?;
                let ty = &schema.columns[i].ty;
                if !convertible(ty, &c.target.kind) {
                    return Err(format!(
                        "column {}.{} changed to {}, which cannot be stored in {} column {}.{}",
                        self.source,
                        c.source_name,
                        schema.columns[i].column_type,
                        c.target.type_name,
                        self.target,
                        c.target.name
                    ));
                }
                Ok(i)
            })
            .collect()
    }

    /// The target row (mapped columns in plan order) of a full source row image.
    pub fn target_row(&self, source_row: &[Value]) -> Vec<Value> {
        self.columns
            .iter()
            .map(|c| {
                source_row
                    .get(c.source_index)
                    .cloned()
                    .unwrap_or(Value::Null)
            })
            .collect()
    }

    /// The key values of a source row image, in `key` order.
    pub fn key_of(&self, source_row: &[Value]) -> Vec<Value> {
        self.key
            .iter()
            .map(|&i| {
                source_row
                    .get(self.columns[i].source_index)
                    .cloned()
                    .unwrap_or(Value::Null)
            })
            .collect()
    }
}

/// The compiled mapping set.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub tables: Vec<Arc<TablePlan>>,
    /// The PostgreSQL → MySQL plans of tables mapped `reverse` or `both`.
    pub reverse: Vec<Arc<super::ReversePlan>>,
    by_source: HashMap<TableName, Vec<usize>>,
}

impl Plan {
    pub fn new(tables: Vec<Arc<TablePlan>>) -> Plan {
        let mut by_source: HashMap<TableName, Vec<usize>> = HashMap::new();
        for (i, t) in tables.iter().enumerate() {
            by_source.entry(t.source.clone()).or_default().push(i);
        }
        Plan {
            tables,
            reverse: Vec::new(),
            by_source,
        }
    }

    /// The forward plans fed by a source table.
    pub fn forward_for(&self, source: &TableName) -> impl Iterator<Item = &Arc<TablePlan>> {
        self.by_source
            .get(source)
            .into_iter()
            .flatten()
            .map(|&i| &self.tables[i])
            .filter(|t| t.direction.forward())
    }

    /// Whether any table is also replicated from PostgreSQL, so writes there must be tagged.
    pub fn has_reverse(&self) -> bool {
        self.tables
            .iter()
            .any(|t| t.direction != Direction::Forward)
    }

    /// Source tables read by forward plans.
    pub fn forward_sources(&self) -> BTreeSet<TableName> {
        self.tables
            .iter()
            .filter(|t| t.direction.forward())
            .map(|t| t.source.clone())
            .collect()
    }
}

/// Source and target table names a mapping set refers to, so the caller can read their schemas.
pub fn referenced_tables(
    set: &MappingSet,
    source_db: &str,
    target_schema: &str,
) -> (BTreeSet<TableName>, BTreeSet<TableName>) {
    let mut sources = BTreeSet::new();
    let mut targets = BTreeSet::new();
    for f in &set.files {
        for t in &f.spec.table {
            sources.insert(TableName::parse(t.get_ref().source.get_ref(), source_db));
            targets.insert(TableName::parse(
                t.get_ref().target.get_ref(),
                target_schema,
            ));
        }
    }
    (sources, targets)
}

/// Compiles every table entry of `set`; returns all errors together.
pub fn compile(
    set: &MappingSet,
    source_db: &str,
    target_schema: &str,
    sources: &HashMap<TableName, Arc<TableSchema>>,
    targets: &HashMap<TableName, TargetTable>,
) -> Result<Plan> {
    let mut tables = Vec::new();
    let mut errors = Vec::new();
    let mut seen_targets: HashMap<TableName, String> = HashMap::new();
    for file in &set.files {
        for (i, entry) in file.spec.table.iter().enumerate() {
            let spec = entry.get_ref();
            let source_name = TableName::parse(spec.source.get_ref(), source_db);
            let target_name = TableName::parse(spec.target.get_ref(), target_schema);
            let at = |span: std::ops::Range<usize>, key: &str| {
                format!("{}: key `table[{i}]{key}`", file.at(span.start))
            };
            let Some(source) = sources.get(&source_name) else {
                errors.push(format!(
                    "{}: source table {source_name} does not exist in MySQL",
                    at(spec.source.span(), ".source")
                ));
                continue;
            };
            let Some(target) = targets.get(&target_name) else {
                errors.push(format!(
                    "{}: target table {target_name} does not exist in PostgreSQL",
                    at(spec.target.span(), ".target")
                ));
                continue;
            };
            let origin = file.at(entry.span().start);
            if let Some(prev) = seen_targets.insert(target_name.clone(), origin.clone()) {
                errors.push(format!(
                    "{}: target table {target_name} is already fed by the mapping at {prev}; one table entry per target table",
                    at(spec.target.span(), ".target")
                ));
                continue;
            }
            match compile_table(file, i, spec, origin, source.clone(), target) {
                Ok(t) => tables.push(Arc::new(t)),
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    let mut reverse = Vec::new();
    for t in tables.iter().filter(|t| t.direction != Direction::Forward) {
        match super::ReversePlan::of(t) {
            Ok(r) => reverse.push(Arc::new(r)),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        let mut plan = Plan::new(tables);
        plan.reverse = reverse;
        Ok(plan)
    } else {
        Err(Error::mapping(errors.join("\n")))
    }
}

/// Compiles one table entry; also used to re-bind a plan after the source table changed.
pub fn compile_table(
    file: &MappingFile,
    index: usize,
    spec: &TableSpec,
    origin: String,
    source: Arc<TableSchema>,
    target: &TargetTable,
) -> std::result::Result<TablePlan, Vec<String>> {
    let mut errors = Vec::new();
    let at = |span: std::ops::Range<usize>, key: &str| {
        format!("{}: key `table[{index}]{key}`", file.at(span.start))
    };
    let mode = spec
        .columns
        .as_ref()
        .map(|m| *m.get_ref())
        .unwrap_or_default();

    // Which source columns go where: (source column name, target name, key path, span).
    let mut wanted: Vec<(String, String, String, std::ops::Range<usize>)> = Vec::new();
    for (name, col) in &spec.column {
        let key = format!(".column.{}", name.get_ref());
        if source.column_index(name.get_ref()).is_none() {
            errors.push(format!(
                "{}: column {} does not exist in source table {}",
                at(name.span(), &key),
                name.get_ref(),
                source.name
            ));
            continue;
        }
        if mode == ColumnsMode::Listed {
            if let Some(t) = col.get_ref().target_name(name.get_ref()) {
                wanted.push((name.get_ref().clone(), t, key, name.span()));
            }
        }
    }
    if mode == ColumnsMode::All {
        for c in &source.columns {
            let explicit = spec
                .column
                .iter()
                .find(|(k, _)| k.get_ref().eq_ignore_ascii_case(&c.name));
            match explicit {
                Some((k, v)) => {
                    if let Some(t) = v.get_ref().target_name(&c.name) {
                        wanted.push((
                            c.name.clone(),
                            t,
                            format!(".column.{}", k.get_ref()),
                            k.span(),
                        ));
                    }
                }
                None => wanted.push((
                    c.name.clone(),
                    c.name.to_ascii_lowercase(),
                    ".columns".into(),
                    spec.columns
                        .as_ref()
                        .map(|s| s.span())
                        .unwrap_or(spec.source.span()),
                )),
            }
        }
    }

    let mut columns = Vec::new();
    let mut target_seen: HashMap<String, String> = HashMap::new();
    for (src, tgt, key, span) in wanted {
        let si = source.column_index(&src).expect("checked above");
        let scol = &source.columns[si];
        let Some(tcol) = target.columns.iter().find(|c| c.name == tgt) else {
            errors.push(format!(
                "{}: target column {tgt} does not exist in {} (source column {})",
                at(span, &key),
                target.name,
                scol.name
            ));
            continue;
        };
        if let Some(prev) = target_seen.insert(tgt.clone(), scol.name.clone()) {
            errors.push(format!(
                "{}: target column {tgt} is fed by both {prev} and {}",
                at(span, &key),
                scol.name
            ));
            continue;
        }
        if !convertible(&scol.ty, &tcol.kind) {
            errors.push(format!(
                "{}: cannot convert {} column {} ({}) to {} column {}.{}",
                at(span, &key),
                scol.ty.describe(),
                scol.name,
                scol.column_type,
                tcol.type_name,
                target.name,
                tcol.name
            ));
            continue;
        }
        columns.push(ColumnPlan {
            source_name: scol.name.clone(),
            source_index: si,
            source_type: scol.ty.clone(),
            target: tcol.clone(),
        });
    }

    // The key: named source columns, or the source primary key.
    let (key_names, key_span, key_path): (Vec<String>, _, _) = match &spec.key {
        Some(k) => (k.get_ref().clone(), k.span(), ".key"),
        None => (
            source
                .primary_key
                .iter()
                .map(|&i| source.columns[i].name.clone())
                .collect(),
            spec.source.span(),
            ".key",
        ),
    };
    let mut key = Vec::new();
    if key_names.is_empty() {
        errors.push(format!(
            "{}: source table {} has no primary key: name the key columns with key = [\"...\"]",
            at(key_span.clone(), key_path),
            source.name
        ));
    }
    for k in &key_names {
        match columns
            .iter()
            .position(|c| c.source_name.eq_ignore_ascii_case(k))
        {
            Some(p) => key.push(p),
            None => errors.push(format!(
                "{}: key column {k} of {} is not mapped to a target column",
                at(key_span.clone(), key_path),
                source.name
            )),
        }
    }
    if errors.is_empty() {
        let mut target_key: Vec<String> = key
            .iter()
            .map(|&i| columns[i].target.name.clone())
            .collect();
        target_key.sort();
        let backed = target.unique_keys.iter().any(|u| {
            let mut u = u.clone();
            u.sort();
            u == target_key
        });
        if !backed {
            errors.push(format!(
                "{}: target {} has no primary key or unique index on ({}): upserts by key need one",
                at(key_span, key_path),
                target.name,
                target_key.join(", ")
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(TablePlan {
        origin,
        source: source.name.clone(),
        target: target.name.clone(),
        direction: spec
            .direction
            .as_ref()
            .map(|d| *d.get_ref())
            .unwrap_or_default(),
        columns,
        key,
        source_schema: source,
    })
}

/// Whether values of a source column type can be written to a target column kind.
/// Must agree with what the sinks encode; a value that does not fit at run time (an integer out
/// of range, a string that is not a UUID) becomes a dead letter, not a compile error.
pub fn convertible(from: &SourceType, to: &TargetKind) -> bool {
    use SourceType as S;
    use TargetKind as T;
    if *to == T::Text {
        return !matches!(from, S::Binary | S::Dropped | S::Postgres(_));
    }
    match from {
        S::Int { bytes, .. } => {
            matches!(
                to,
                T::Int2 | T::Int4 | T::Int8 | T::Numeric | T::Float4 | T::Float8
            ) || (*bytes == 1 && *to == T::Bool)
        }
        S::Decimal { scale, .. } => {
            matches!(to, T::Numeric | T::Float4 | T::Float8)
                || (*scale == 0 && matches!(to, T::Int2 | T::Int4 | T::Int8))
        }
        S::Float | S::Double => matches!(to, T::Float4 | T::Float8 | T::Numeric),
        S::Text { .. } => matches!(to, T::Json | T::Jsonb | T::Uuid | T::Bytea),
        S::Binary => matches!(to, T::Bytea | T::Uuid),
        S::Date => matches!(to, T::Date | T::Timestamp | T::Timestamptz),
        S::DateTime | S::Timestamp => matches!(to, T::Timestamp | T::Timestamptz),
        S::Time => matches!(to, T::Time | T::Interval),
        S::Year => matches!(to, T::Int2 | T::Int4 | T::Int8 | T::Numeric),
        S::Enum(_) | S::Set(_) => false,
        S::Json => matches!(to, T::Json | T::Jsonb),
        S::Bit(n) => {
            matches!(to, T::Bit | T::Bytea)
                || (*n <= 63 && *to == T::Int8)
                || (*n == 1 && *to == T::Bool)
        }
        // PostgreSQL → PostgreSQL is not a direction duplex maps.
        S::Dropped | S::Postgres(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::spec::MappingFile;
    use crate::model::ColumnSchema;
    use std::path::{Path, PathBuf};

    fn source() -> Arc<TableSchema> {
        let col = |name: &str, ty: SourceType| ColumnSchema {
            name: name.into(),
            ty,
            nullable: true,
            column_type: "x".into(),
        };
        Arc::new(TableSchema {
            name: TableName::new("shop", "b_sale_order"),
            columns: vec![
                col(
                    "ID",
                    SourceType::Int {
                        bytes: 4,
                        unsigned: false,
                    },
                ),
                col(
                    "PRICE",
                    SourceType::Decimal {
                        precision: 18,
                        scale: 4,
                    },
                ),
                col(
                    "LID",
                    SourceType::Text {
                        charset: "utf8mb3".into(),
                    },
                ),
            ],
            primary_key: vec![0],
        })
    }

    fn target() -> TargetTable {
        let col = |name: &str, kind: TargetKind, ty: &str| TargetColumn {
            name: name.into(),
            type_name: ty.into(),
            kind,
            oid: 0,
            nullable: true,
        };
        TargetTable {
            name: TableName::new("public", "orders"),
            columns: vec![
                col("bitrix_order_id", TargetKind::Int4, "integer"),
                col("total", TargetKind::Numeric, "numeric(18,4)"),
                col("lid", TargetKind::Int4, "integer"),
            ],
            unique_keys: vec![vec!["bitrix_order_id".into()]],
        }
    }

    fn run(text: &str) -> Result<Plan> {
        let file = MappingFile::parse(Path::new("m/orders.toml"), text.into()).unwrap();
        let set = MappingSet {
            dir: PathBuf::from("m"),
            files: vec![file],
        };
        let mut s = HashMap::new();
        s.insert(TableName::new("shop", "b_sale_order"), source());
        let mut t = HashMap::new();
        t.insert(TableName::new("public", "orders"), target());
        compile(&set, "shop", "public", &s, &t)
    }

    #[test]
    fn good_mapping_compiles() {
        let plan = run("[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n[table.column]\nID = \"bitrix_order_id\"\nPRICE = \"total\"\n").unwrap();
        let t = &plan.tables[0];
        assert_eq!(t.columns.len(), 2);
        assert_eq!(t.key, vec![0]);
        let row = vec![
            Value::Int(7),
            Value::Decimal("1.5".into()),
            Value::Text("s1".into()),
        ];
        assert_eq!(
            t.target_row(&row),
            vec![Value::Int(7), Value::Decimal("1.5".into())]
        );
        assert_eq!(
            plan.forward_for(&TableName::new("shop", "b_sale_order"))
                .count(),
            1
        );
    }

    #[test]
    fn errors_name_file_line_key() {
        let e = run("[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n[table.column]\nID = \"bitrix_order_id\"\nPRCE = \"total\"\nLID = \"lid\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("m/orders.toml:6: key `table[0].column.PRCE`: column PRCE does not exist in source table shop.b_sale_order"), "{msg}");
        assert!(msg.contains("m/orders.toml:7: key `table[0].column.LID`: cannot convert text (utf8mb3) column LID"), "{msg}");

        let e = run("[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n[table.column]\nPRICE = \"total\"\n").unwrap_err();
        assert!(e.to_string().contains("m/orders.toml:2: key `table[0].key`: key column ID of shop.b_sale_order is not mapped"), "{e}");

        let e = run("[[table]]\nsource = \"b_sale_ordr\"\ntarget = \"orders\"\n").unwrap_err();
        assert!(e.to_string().contains("m/orders.toml:2: key `table[0].source`: source table shop.b_sale_ordr does not exist"), "{e}");

        let e = run("[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\nkey = [\"PRICE\"]\n[table.column]\nID = \"bitrix_order_id\"\nPRICE = \"total\"\n").unwrap_err();
        assert!(e.to_string().contains("m/orders.toml:4: key `table[0].key`: target public.orders has no primary key or unique index on (total)"), "{e}");
    }

    #[test]
    fn conversions() {
        assert!(convertible(
            &SourceType::Int {
                bytes: 8,
                unsigned: true
            },
            &TargetKind::Numeric
        ));
        assert!(!convertible(
            &SourceType::Text {
                charset: "cp1251".into()
            },
            &TargetKind::Int4
        ));
        assert!(convertible(&SourceType::Enum(vec![]), &TargetKind::Text));
        assert!(!convertible(&SourceType::Binary, &TargetKind::Text));
        assert!(convertible(&SourceType::DateTime, &TargetKind::Timestamptz));
    }
}
