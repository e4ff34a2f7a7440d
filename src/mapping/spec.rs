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
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ColumnSpec {
    Rename(String),
    Full(ColumnTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnTable {
    pub to: Option<String>,
    #[serde(default)]
    pub skip: bool,
}

impl ColumnSpec {
    /// The target column name, or `None` when the column is skipped.
    pub fn target_name(&self, source: &str) -> Option<String> {
        match self {
            ColumnSpec::Rename(t) => Some(t.clone()),
            ColumnSpec::Full(t) if t.skip => None,
            ColumnSpec::Full(t) => {
                Some(t.to.clone().unwrap_or_else(|| source.to_ascii_lowercase()))
            }
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
        let de = toml::Deserializer::new(&text);
        let spec: FileSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let mut key = clean_key_path(&e.path().to_string());
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|s| format!(":{}", line_of(&text, s.start)))
                .unwrap_or_default();
            // Spanned map keys show as `?` in the path: take the key from the line itself.
            if let (Some(stripped), Some(span)) = (key.strip_suffix(".?"), inner.span()) {
                let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
                let line_text = &text[line_start..];
                let name = line_text.split('=').next().unwrap_or("?").trim().trim_matches('"');
                key = format!("{stripped}.{name}");
            }
            let message = inner.message().to_string();
            let message = if message.contains("did not match any variant of untagged enum ColumnSpec") {
                "expected a target column name (\"name\") or a table like { to = \"name\" } / { skip = true } with no other keys".to_string()
            } else {
                message
            };
            Error::mapping(format!("{}{line}: key `{key}`: {message}", path.display()))
        })?;
        Ok(MappingFile {
            path: path.to_path_buf(),
            text,
            spec,
        })
    }
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
            .map(|(k, v)| (k.get_ref().clone(), v.get_ref().target_name(k.get_ref())))
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
