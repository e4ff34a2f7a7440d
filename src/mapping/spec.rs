//! The mapping file format (v1). One file holds one or more `[[table]]` entries:
//!
//! ```toml
//! [[table]]
//! source = "b_sale_order"        # table in [mysql].database, or "db.table"
//! target = "orders"              # table in [postgres].schema, or "schema.table"
//! direction = "forward"          # forward (MySQL → PostgreSQL) | reverse | both
//! key = ["ID"]                   # source key columns; default: the source primary key
//! columns = "listed"             # "listed": only [table.column]; "all": every source column,
//!                                # target name = source name in lower case unless renamed
//!
//! [table.column]
//! ID = "bitrix_order_id"         # rename
//! PRICE = { to = "total_amount" }
//! SEARCH_CONTENT = { skip = true }   # with columns = "all": leave out
//! ```
//!
//! The table form of a column entry is where later constructs (transforms, value maps, per-column
//! direction) attach; unknown keys are rejected, so a typo never silently does nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::line_of;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// MySQL → PostgreSQL.
    #[default]
    Forward,
    /// PostgreSQL → MySQL.
    Reverse,
    Both,
}

impl Direction {
    pub fn forward(self) -> bool {
        matches!(self, Direction::Forward | Direction::Both)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ColumnsMode {
    #[default]
    Listed,
    All,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    #[serde(default)]
    pub table: Vec<Spanned<TableSpec>>,
    /// Named value maps, usable from every file of the set.
    #[serde(default)]
    pub map: BTreeMap<Spanned<String>, MapSpec>,
}

/// What a source DELETE does to the target row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// The target row is deleted.
    Delete,
    /// The columns this entry writes are set to NULL; the row stays (another entry owns it).
    Clear,
    /// Nothing happens.
    Ignore,
}

/// How rows from PostgreSQL are written to MySQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReverseWrite {
    /// INSERT … ON DUPLICATE KEY UPDATE.
    #[default]
    Upsert,
    /// UPDATE of rows that exist; a row that does not is left alone (the shop creates rows).
    Update,
}

/// Who wins when both sides changed the same `both` column within the lag (see
/// `mappings/README.md`, "Conflicts").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Conflict {
    /// The MySQL (Bitrix) side's value wins.
    #[serde(rename = "bitrix", alias = "mysql")]
    Bitrix,
    /// The PostgreSQL (CRM) side's value wins.
    #[default]
    #[serde(rename = "crm", alias = "postgres")]
    Crm,
    /// The change with the later source commit time wins.
    #[serde(rename = "newest")]
    Newest,
}

impl Conflict {
    pub fn as_str(self) -> &'static str {
        match self {
            Conflict::Bitrix => "bitrix",
            Conflict::Crm => "crm",
            Conflict::Newest => "newest",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub source: Spanned<String>,
    pub target: Spanned<String>,
    #[serde(default)]
    pub direction: Option<Spanned<Direction>>,
    pub key: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub columns: Option<Spanned<ColumnsMode>>,
    #[serde(default)]
    pub column: BTreeMap<Spanned<String>, Spanned<ColumnSpec>>,
    /// Row filter: every condition must hold for a row to be replicated.
    #[serde(default)]
    pub filter: BTreeMap<Spanned<String>, Spanned<FilterSpec>>,
    /// Target columns set to a constant on every forward write.
    #[serde(default)]
    pub set: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    /// Target jsonb columns packed from source columns: a list, or `"rest"` for every source
    /// column not mapped otherwise.
    #[serde(default)]
    pub pack: BTreeMap<Spanned<String>, Spanned<PackSpec>>,
    /// Target columns resolved through another table's natural key.
    #[serde(default)]
    pub lookup: BTreeMap<Spanned<String>, Spanned<LookupSpec>>,
    /// The source is an EAV table: one row per (key, property code, value).
    #[serde(default)]
    pub pivot: Option<Spanned<PivotSpec>>,
    #[serde(default)]
    pub on_delete: Option<Spanned<OnDelete>>,
    #[serde(default)]
    pub reverse_write: Option<Spanned<ReverseWrite>>,
    /// Who wins a conflict on this entry's `both` columns (default: `crm`).
    #[serde(default)]
    pub conflict: Option<Spanned<Conflict>>,
    /// MySQL columns set on every reverse write (e.g. the change time).
    #[serde(default)]
    pub reverse_set: BTreeMap<Spanned<String>, Spanned<ReverseSetSpec>>,
}

#[derive(Debug)]
pub enum ColumnSpec {
    Rename(String),
    Full(ColumnTable),
    /// One source column feeding several target columns.
    Many(Vec<ColumnTable>),
}

/// By hand, not `untagged`: an untagged enum's error only says that no form fits, while a
/// mistake inside the table form should be named (`null_if: invalid type: string …`).
impl<'de> Deserialize<'de> for ColumnSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(ColumnSpec::Rename(s)),
            v @ toml::Value::Table(_) => from_value(v, "")
                .map(ColumnSpec::Full)
                .map_err(D::Error::custom),
            toml::Value::Array(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, v)| from_value(v, &format!("[{i}]")))
                .collect::<std::result::Result<_, _>>()
                .map(ColumnSpec::Many)
                .map_err(D::Error::custom),
            other => Err(D::Error::custom(format!(
                "expected a target column name (\"name\"), a table like {{ to = \"name\", transform = [...] }} or a list of such tables, found {}",
                other.type_str()
            ))),
        }
    }
}

/// A value deserialized into `T`; the error names the key inside the value where it went wrong.
fn from_value<T: serde::de::DeserializeOwned>(
    v: toml::Value,
    at: &str,
) -> std::result::Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let key = match (at.is_empty(), path == ".") {
            (_, true) => at.to_string(),
            (true, false) => path,
            (false, false) => format!("{at}.{path}"),
        };
        let message = e.into_inner().message().to_string();
        let message = untagged_hint(&message)
            .map(str::to_string)
            .unwrap_or(message);
        if key.is_empty() || message.contains(&format!("`{key}`")) {
            message
        } else {
            format!("{key}: {message}")
        }
    })
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ColumnTable {
    pub to: Option<String>,
    #[serde(default)]
    pub skip: bool,
    /// Built-in steps, in order: a name or a list of names.
    #[serde(default)]
    pub transform: Option<OneOrMany<String>>,
    /// Values that become NULL.
    #[serde(default)]
    pub null_if: Option<Vec<String>>,
    /// Text → date, trying each format (chrono syntax) in turn.
    #[serde(default)]
    pub parse_date: Option<OneOrMany<String>>,
    /// A local DATETIME in this zone → timestamptz (default: `source_time_zone`).
    #[serde(default)]
    pub zone: Option<String>,
    /// A named value map, applied after the other steps.
    #[serde(default)]
    pub map: Option<String>,
    #[serde(default)]
    pub on_error: Option<super::transform::OnError>,
    /// This column's direction, within the table's.
    #[serde(default)]
    pub direction: Option<Direction>,
    /// Pivot codes only: lower wins when several codes feed one column.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Who wins a conflict on this column (a `both` column only; default: the table's).
    #[serde(default)]
    pub conflict: Option<Conflict>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug)]
pub enum FilterSpec {
    Test(FilterTest),
    /// `COLUMN = value`: equal to this value.
    Equals(toml::Value),
}

/// By hand, not `untagged`: a table with a misspelt test (`{ nul = true }`) must be an error
/// naming the key, not a value to compare with.
impl<'de> Deserialize<'de> for FilterSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        match toml::Value::deserialize(d)? {
            v @ toml::Value::Table(_) => from_value(v, "")
                .map(FilterSpec::Test)
                .map_err(D::Error::custom),
            toml::Value::Array(_) => Err(D::Error::custom(
                "a list is not a value to compare with: write { in = [...] } or { not_in = [...] }",
            )),
            v => Ok(FilterSpec::Equals(v)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterTest {
    #[serde(default, rename = "in")]
    pub in_: Option<Vec<toml::Value>>,
    #[serde(default)]
    pub not_in: Option<Vec<toml::Value>>,
    /// `true`: the column must be NULL; `false`: must not be.
    #[serde(default)]
    pub null: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PackSpec {
    Columns(Vec<String>),
    /// `"rest"`.
    Rest(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupSpec {
    /// A target column this entry writes, holding the other table's natural key.
    pub from: String,
    /// The table looked up (in the target schema unless qualified).
    pub table: String,
    /// Its column holding the natural key (unique).
    #[serde(rename = "match")]
    pub match_: String,
    /// Its column whose value is written.
    pub take: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PivotSpec {
    /// The source column naming the property (`CODE`).
    pub name: String,
    /// The source column holding its value (`VALUE`).
    pub value: String,
    /// Property code → target column(s).
    /// Property code → target column(s), in the forms of a column entry.
    pub code: BTreeMap<Spanned<String>, Spanned<ColumnSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReverseSetSpec {
    /// `"commit_time"`: the PostgreSQL commit time as local time in `source_time_zone`.
    pub value: String,
    /// Only when one of these MySQL columns is written with a new value (default: always).
    #[serde(default)]
    pub when_changed: Vec<String>,
    /// The zone of the wall time written (default: `source_time_zone`).
    #[serde(default)]
    pub zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapSpec {
    /// Source value → target value.
    pub values: BTreeMap<String, toml::Value>,
    /// Target value → source value, for target values several source values map to.
    #[serde(default)]
    pub reverse: BTreeMap<String, toml::Value>,
    /// Target value for a source value not listed (without it: dead letter).
    #[serde(default)]
    pub default: Option<toml::Value>,
    /// Source value for a target value not listed (without it: dead letter).
    #[serde(default)]
    pub reverse_default: Option<toml::Value>,
}

impl ColumnTable {
    /// The target column name, or `None` when the column is skipped.
    pub fn target_name(&self, source: &str) -> Option<String> {
        if self.skip {
            None
        } else {
            Some(
                self.to
                    .clone()
                    .unwrap_or_else(|| source.to_ascii_lowercase()),
            )
        }
    }
}

impl ColumnSpec {
    /// The column's entries (one per target column; skipped ones included).
    pub fn entries(&self) -> Vec<ColumnTable> {
        match self {
            ColumnSpec::Rename(t) => vec![ColumnTable {
                to: Some(t.clone()),
                ..Default::default()
            }],
            ColumnSpec::Full(t) => vec![t.clone()],
            ColumnSpec::Many(v) => v.clone(),
        }
    }
}

/// One parsed file, with its text kept for turning spans into line numbers.
#[derive(Debug)]
pub struct MappingFile {
    pub path: PathBuf,
    pub text: String,
    pub spec: FileSpec,
}

impl MappingFile {
    /// `file:line` of a byte offset.
    pub fn at(&self, offset: usize) -> String {
        format!("{}:{}", self.path.display(), line_of(&self.text, offset))
    }

    pub fn parse(path: &Path, text: String) -> Result<MappingFile> {
        let spec: FileSpec = crate::config::from_toml(&text).map_err(|(key, inner)| {
            let mut key = clean_key_path(&key);
            let line = inner
                .span()
                .map(|s| format!(":{}", line_of(&text, s.start)))
                .unwrap_or_default();
            // Spanned map keys show as `?` in the path: take the key from the text.
            if let Some(span) = inner.span() {
                key = name_spanned_key(&key, &text, span.start);
            }
            let message = inner.message().to_string();
            let message = untagged_hint(&message)
                .map(str::to_string)
                .unwrap_or(message);
            Error::mapping(format!(
                "{}{line}: {}",
                path.display(),
                crate::config::toml_error_text(&key, &message)
            ))
        })?;
        Ok(MappingFile {
            path: path.to_path_buf(),
            text,
            spec,
        })
    }
}

/// `path` with its last `?` (a spanned map key, which serde cannot print) replaced by the key
/// written in `text`: on the line of `offset` (`NAME = …` or a header `[a.b.NAME]`), or, when the
/// error is about a key inside an entry written as its own table, on the header above it.
fn name_spanned_key(path: &str, text: &str, offset: usize) -> String {
    let mut segs: Vec<&str> = path.split('.').collect();
    let Some(q) = segs.iter().rposition(|s| *s == "?") else {
        return path.to_string();
    };
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line_key = |line: &str| -> String {
        let line = line.trim();
        let name = if line.starts_with('[') {
            let header = line.trim_start_matches('[');
            let header = header.split(']').next().unwrap_or(header);
            header.rsplit('.').next().unwrap_or(header)
        } else {
            line.split('=').next().unwrap_or(line)
        };
        name.trim().trim_matches('"').trim_matches('\'').to_string()
    };
    let here = line_key(text[start..].lines().next().unwrap_or(""));
    let inner = segs.get(q + 1).copied();
    let name = if inner.is_some_and(|k| k == here) {
        // `[table.lookup.order_id]` … `tkae = "id"`: the entry's name is on the header above.
        text[..start]
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('['))
            .map(line_key)
            .unwrap_or(here)
    } else {
        here
    };
    segs[q] = &name;
    segs.join(".")
}

/// A readable message for a value that fits none of the forms a key allows.
fn untagged_hint(message: &str) -> Option<&'static str> {
    let kind = message.strip_prefix("data did not match any variant of untagged enum ")?;
    Some(match kind.trim() {
        "PackSpec" => "expected a list of source columns ([\"LID\", \"XML_ID\"]) or \"rest\"",
        "OneOrMany" => "expected a string or a list of strings",
        _ => return None,
    })
}

/// Drops the internal segments `toml::Spanned` adds to serde's key path.
fn clean_key_path(path: &str) -> String {
    path.split('.')
        .filter(|seg| !seg.starts_with("$__serde_spanned"))
        .collect::<Vec<_>>()
        .join(".")
        .replace(".[", "[")
}

/// All files of one mapping directory, in file-name order.
#[derive(Debug)]
pub struct MappingSet {
    pub dir: PathBuf,
    pub files: Vec<MappingFile>,
}

impl MappingSet {
    /// Whether any table is replicated from PostgreSQL (by the files alone, without the schemas).
    pub fn has_reverse(&self) -> bool {
        self.files.iter().any(|f| {
            f.spec.table.iter().any(|t| {
                t.get_ref()
                    .direction
                    .as_ref()
                    .is_some_and(|d| *d.get_ref() != Direction::Forward)
            })
        })
    }
}

/// Reads and parses every `*.toml` in `dir`. Parse errors of all files are reported together.
pub fn load_dir(dir: &Path) -> Result<MappingSet> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::mapping(format!(
            "mapping directory {}: cannot read: {e}",
            dir.display()
        ))
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(Error::mapping(format!(
            "mapping directory {}: no *.toml files",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{}: cannot read: {e}", path.display()));
                continue;
            }
        };
        match MappingFile::parse(&path, text) {
            Ok(f) => files.push(f),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(Error::mapping(errors.join("\n")));
    }
    Ok(MappingSet {
        dir: dir.to_path_buf(),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_file_line_key() {
        let text = "[[table]]\nsource = \"a\"\ntarget = \"b\"\ndirection = \"sideways\"\n";
        let e = MappingFile::parse(Path::new("m/x.toml"), text.into()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("m/x.toml:4: key `table[0].direction`"),
            "{e}"
        );

        let text =
            "[[table]]\nsource = \"a\"\ntarget = \"b\"\n[table.column]\nID = { too = \"x\" }\n";
        let e = MappingFile::parse(Path::new("m/x.toml"), text.into()).unwrap_err();
        assert!(e.to_string().contains("m/x.toml:5"), "{e}");
        assert!(e.to_string().contains("table[0].column.ID"), "{e}");

        let text = "[[table]]\nsource = \"a\"\ntarget = \"b\"\ncolums = \"all\"\n";
        let e = MappingFile::parse(Path::new("m/x.toml"), text.into()).unwrap_err();
        assert!(e.to_string().contains("m/x.toml:4"), "{e}");
        assert!(e.to_string().contains("colums"), "{e}");
    }

    #[test]
    fn column_forms() {
        let text = "[[table]]\nsource = \"a\"\ntarget = \"b\"\ncolumns = \"all\"\n[table.column]\nID = \"id2\"\nX = { skip = true }\nY = { to = \"why\" }\nZ = {}\n";
        let f = MappingFile::parse(Path::new("x.toml"), text.into()).unwrap();
        let t = f.spec.table[0].get_ref();
        let names: Vec<_> = t
            .column
            .iter()
            .map(|(k, v)| {
                (
                    k.get_ref().clone(),
                    v.get_ref().entries()[0].target_name(k.get_ref()),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("ID".into(), Some("id2".into())),
                ("X".into(), None),
                ("Y".into(), Some("why".into())),
                ("Z".into(), Some("z".into()))
            ]
        );
    }
}
