//! What a verify run found: per mapping entry the counts, and each difference with its key,
//! column, both values and the source position it was read at; rendered as a table or JSON.

use serde::Serialize;

use crate::state::progress::KeyValue;

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The row is on both sides; a mapped column differs.
    Different,
    /// The source has the row; the target does not.
    Missing,
    /// The target holds a row (or, for an entry that clears on delete, values) the source does
    /// not have.
    Extra,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Different => "different",
            Kind::Missing => "missing",
            Kind::Extra => "extra",
        }
    }
}

/// One difference that survived the re-check.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub kind: Kind,
    /// The target key (`col=value, …`).
    pub key: String,
    /// The target key's values (what `duplex repair --key` takes).
    #[serde(skip)]
    pub key_values: Vec<KeyValue>,
    /// The columns that differ (empty for a missing or extra row).
    pub columns: Vec<ColumnDiff>,
    /// The source position the source row was read at.
    pub position: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnDiff {
    pub column: String,
    /// What the mapping makes of the source row (truncated).
    pub source: Option<String>,
    /// What the target holds (truncated).
    pub target: Option<String>,
}

/// One mapping entry's result.
#[derive(Debug, Clone, Serialize, Default)]
pub struct EntryReport {
    pub direction: &'static str,
    pub source: String,
    pub target: String,
    /// Where the entry is declared (`file:line`).
    pub entry: String,
    /// Keys compared: those the source has, and the target's that the source lacks.
    pub rows_checked: u64,
    pub equal: u64,
    pub different: u64,
    pub missing: u64,
    pub extra: u64,
    /// Rows the mapping cannot write (they are, or will be, dead letters).
    pub dead_lettered: u64,
    /// Some of them: the key and why (at most `show`).
    pub dead_letters: Vec<String>,
    /// Rows that kept changing during every re-check (neither equal nor proved different).
    pub unsettled: u64,
    /// Why the entry was not compared, when it was not.
    pub skipped: Option<String>,
    /// The differences (at most `shown`; the counts hold them all).
    pub differences: Vec<Difference>,
}

impl EntryReport {
    pub fn mismatches(&self) -> u64 {
        self.different + self.missing + self.extra
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub pipeline: String,
    /// Whether a running `duplex run` streamed meanwhile (differences were re-checked after
    /// the stream passed the positions they were read at).
    pub online: bool,
    pub started_at: String,
    pub seconds: f64,
    pub entries: Vec<EntryReport>,
}

impl Report {
    pub fn rows_checked(&self) -> u64 {
        self.entries.iter().map(|e| e.rows_checked).sum()
    }

    pub fn mismatches(&self) -> u64 {
        self.entries.iter().map(|e| e.mismatches()).sum()
    }

    pub fn unsettled(&self) -> u64 {
        self.entries.iter().map(|e| e.unsettled).sum()
    }

    /// Both sides agree on everything compared.
    pub fn all_equal(&self) -> bool {
        self.mismatches() == 0 && self.unsettled() == 0
    }

    /// The report as a table and a list of differences.
    pub fn render(&self) -> String {
        let mut rows = vec![[
            "entry",
            "keys",
            "equal",
            "different",
            "missing",
            "extra",
            "dead-lettered",
            "unsettled",
        ]
        .map(String::from)
        .to_vec()];
        for e in &self.entries {
            let name = format!("{} → {}", e.source, e.target);
            if let Some(why) = &e.skipped {
                rows.push(vec![name, format!("skipped: {why}")]);
                continue;
            }
            rows.push(vec![
                name,
                e.rows_checked.to_string(),
                e.equal.to_string(),
                e.different.to_string(),
                e.missing.to_string(),
                e.extra.to_string(),
                e.dead_lettered.to_string(),
                e.unsettled.to_string(),
            ]);
        }
        let mut out = format!(
            "verify of pipeline {} ({}), {:.1} s\n",
            self.pipeline,
            if self.online {
                "online: differences re-checked after the stream passed them"
            } else {
                "offline: no stream running"
            },
            self.seconds
        );
        out.push_str(&table(&rows));
        for e in &self.entries {
            let more = e.mismatches() as usize > e.differences.len();
            for d in &e.differences {
                out.push_str(&format!(
                    "{} {} [{}] read at {}\n",
                    e.target,
                    d.kind.as_str(),
                    d.key,
                    d.position
                ));
                for c in &d.columns {
                    out.push_str(&format!(
                        "    {}: source → {}, target {}\n",
                        c.column,
                        c.source.as_deref().unwrap_or("NULL"),
                        c.target.as_deref().unwrap_or("NULL")
                    ));
                }
            }
            if more {
                out.push_str(&format!(
                    "{}: {} more not listed (--json lists up to --show)\n",
                    e.target,
                    e.mismatches() as usize - e.differences.len()
                ));
            }
        }
        out.push_str(if self.all_equal() {
            "both sides agree\n"
        } else {
            "the sides differ: `duplex repair` sends the differing rows again\n"
        });
        out
    }
}

/// Lines of cells as a left-aligned table; a row shorter than the longest (a note that spans
/// the rest) does not widen the columns.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter(|r| r.len() == cols)
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
