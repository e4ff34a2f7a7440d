//! Statements in the binlog: a data change logged as a statement (`binlog_format` STATEMENT or
//! MIXED for that statement) carries no rows duplex can replicate. For a watched table that is
//! a stop before the checkpoint passes it — unless a copy of the table taken after it (`duplex
//! snapshot --table …`) already holds its effect; for other tables it is skipped and counted.
//!
//! Owns telling a statement's kind and the watched tables it names. Pure: no I/O.

use std::collections::HashSet;

use crate::model::TableName;

/// Whether a statement changes data (rather than definitions).
pub fn is_dml(statement: &str) -> bool {
    let first = first_word(statement).to_ascii_uppercase();
    matches!(
        first.as_str(),
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD"
    )
}

/// Whether a statement is a TRUNCATE (logged as DDL whatever the binlog format).
pub fn is_truncate(statement: &str) -> bool {
    first_word(statement).eq_ignore_ascii_case("TRUNCATE")
}

/// The first word after leading blanks and `/* … */` comments.
fn first_word(statement: &str) -> &str {
    let mut s = statement.trim_start();
    while let Some(rest) = s.strip_prefix("/*") {
        s = rest.find("*/").map_or("", |i| &rest[i + 2..]).trim_start();
    }
    let end = s
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    &s[..end]
}

/// The watched tables a statement names (a word equal to a table's name, qualified by its
/// database or run in it). Generous on purpose: naming a watched table in any way stops.
pub fn watched_in<'w>(
    statement: &str,
    default_db: &str,
    watched: &'w HashSet<TableName>,
) -> Vec<&'w TableName> {
    let words: Vec<(Option<String>, String)> = statement
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$' || c == '`' || c == '.'))
        .filter(|w| !w.is_empty())
        .map(|w| {
            let w = w.replace('`', "");
            match w.rsplit_once('.') {
                Some((db, name)) => (Some(db.to_string()), name.to_string()),
                None => (None, w),
            }
        })
        .collect();
    let mut named: Vec<&TableName> = watched
        .iter()
        .filter(|t| {
            words.iter().any(|(db, name)| {
                *name == t.name && db.as_deref().unwrap_or(default_db) == t.schema
            })
        })
        .collect();
    named.sort_by_key(|t| t.to_string());
    named
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_data_changes_from_definitions() {
        assert!(is_dml("INSERT INTO t VALUES (1)"));
        assert!(is_dml("  /* app */ update `t` set a = 1"));
        assert!(is_dml("DELETE FROM t"));
        assert!(is_dml("REPLACE INTO t VALUES (1)"));
        assert!(!is_dml("ALTER TABLE t ADD c int"));
        assert!(!is_dml("CREATE TABLE t2 (id int)"));
        assert!(!is_dml("TRUNCATE t"));
        assert!(!is_dml(""));
    }

    #[test]
    fn finds_the_watched_tables_a_statement_names() {
        let watched: HashSet<TableName> = [
            TableName::new("shop", "b_sale_order"),
            TableName::new("shop", "t"),
            TableName::new("other", "x"),
        ]
        .into_iter()
        .collect();
        let names = |s: &str, db: &str| -> Vec<String> {
            watched_in(s, db, &watched)
                .into_iter()
                .map(|t| t.to_string())
                .collect()
        };
        assert_eq!(
            names(
                "UPDATE b_sale_order SET STATUS_ID = 'P' WHERE ID = 1",
                "shop"
            ),
            vec!["shop.b_sale_order"]
        );
        assert_eq!(
            names("INSERT INTO `shop`.`t` VALUES (1)", "mysql"),
            vec!["shop.t"]
        );
        assert_eq!(
            names("INSERT INTO t VALUES (1)", "elsewhere"),
            Vec::<String>::new()
        );
        assert_eq!(
            names("DELETE FROM audit WHERE id = 1", "shop"),
            Vec::<String>::new()
        );
        assert_eq!(
            names("UPDATE t JOIN other.x ON t.id = x.id SET t.a = 1", "shop"),
            vec!["other.x", "shop.t"]
        );
    }
}
