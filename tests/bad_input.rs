//! Bad input gets a clear error and loses nothing: every malformed `duplex.toml` and mapping file
//! here is refused with a message that names the file, the line (where the TOML loader knows it),
//! the key path, and what is wrong or what to do.
//!
//! Config cases and mapping cases the parser catches need no servers; mapping cases that depend on
//! the live schemas compile against tables on the private MariaDB and PostgreSQL, through
//! `duplex::mapping::load_plan`, the same call `duplex check` and `duplex run` make.
//!
//! Every case is an edit of an input that is shown to load, so each error comes from its edit.
//! A case lists all the errors it expects: an error more, or one less, fails it.

mod support;

use std::path::{Path, PathBuf};

use duplex::config::Config;
use duplex::ErrorKind;
use mysql_async::prelude::Queryable;

// ---------------------------------------------------------------------------------------------
// duplex.toml

/// A config that loads (no password: trust authentication). Line numbers below refer to it.
const GOOD_CONFIG: &str = r#"pipeline = "shop"
mappings = "mappings"
source_time_zone = "Asia/Almaty"

[mysql]
host = "127.0.0.1"
port = 3306
user = "bitrix"
database = "bitrix"

[postgres]
host = "127.0.0.1"
port = 5432
user = "crm"
dbname = "crm"

[metrics]
listen = "127.0.0.1:9187"

[apply]
batch_max_rows = 50000

[snapshot]
chunk_rows = 5000
"#;

/// An environment variable no test sets.
const UNSET_ENV: &str = "DUPLEX_BAD_INPUT_NEVER_SET";

/// `text` with each `(from, to)` replaced; `from` must occur exactly once, so an edit never
/// silently leaves the good input as it was.
fn edit(text: &str, edits: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (from, to) in edits {
        assert_eq!(
            out.matches(from).count(),
            1,
            "edit target {from:?} must occur exactly once in:\n{out}"
        );
        out = out.replacen(from, to, 1);
    }
    out
}

struct ConfigCase {
    name: &'static str,
    edits: &'static [(&'static str, &'static str)],
    /// The line the message names, when the TOML loader reports one.
    line: Option<usize>,
    /// The key path the message names.
    key: &'static str,
    /// Words that say what is wrong or what to do; `{dir}` is the config's directory.
    words: &'static [&'static str],
}

const CONFIG_CASES: &[ConfigCase] = &[
    ConfigCase {
        name: "TOML syntax error (unquoted string)",
        edits: &[("user = \"bitrix\"", "user = bitrix")],
        line: Some(8),
        key: "",
        words: &["string values must be quoted"],
    },
    ConfigCase {
        name: "unknown key (typo of password_env)",
        edits: &[(
            "database = \"bitrix\"",
            "database = \"bitrix\"\npasword = \"secret\"",
        )],
        line: Some(10),
        key: "mysql.pasword",
        words: &["unknown field `pasword`", "`password_env`, `password_file`"],
    },
    ConfigCase {
        name: "unknown section (typo of [mysql])",
        edits: &[("[mysql]", "[mysq]")],
        line: Some(5),
        key: "mysq",
        words: &["unknown field `mysq`", "expected one of", "`mysql`"],
    },
    ConfigCase {
        name: "missing pipeline",
        edits: &[("pipeline = \"shop\"\n", "")],
        line: Some(1),
        key: "pipeline",
        words: &["missing field `pipeline`"],
    },
    ConfigCase {
        name: "missing mappings",
        edits: &[("mappings = \"mappings\"\n", "")],
        line: Some(1),
        key: "mappings",
        words: &["missing field `mappings`"],
    },
    ConfigCase {
        name: "missing [mysql] host",
        edits: &[("host = \"127.0.0.1\"\nport = 3306", "port = 3306")],
        line: Some(5),
        key: "mysql.host",
        words: &["missing field `host`"],
    },
    ConfigCase {
        name: "port of the wrong type",
        edits: &[("port = 3306", "port = \"abc\"")],
        line: Some(7),
        key: "mysql.port",
        words: &["invalid type: string \"abc\", expected u16"],
    },
    ConfigCase {
        name: "port out of range",
        edits: &[("port = 5432", "port = 70000")],
        line: Some(13),
        key: "postgres.port",
        words: &["70000", "expected u16"],
    },
    ConfigCase {
        name: "password_env names an unset variable",
        edits: &[(
            "user = \"crm\"",
            "user = \"crm\"\npassword_env = \"DUPLEX_BAD_INPUT_NEVER_SET\"",
        )],
        line: None,
        key: "postgres.password_env",
        words: &["environment variable DUPLEX_BAD_INPUT_NEVER_SET is not set"],
    },
    ConfigCase {
        name: "password_file does not exist",
        edits: &[(
            "user = \"bitrix\"",
            "user = \"bitrix\"\npassword_file = \"secrets/mysql.pw\"",
        )],
        line: None,
        key: "mysql.password_file",
        words: &[
            "cannot read {dir}/secrets/mysql.pw",
            "No such file or directory",
        ],
    },
    ConfigCase {
        name: "both password_env and password_file",
        edits: &[(
            "user = \"bitrix\"",
            "user = \"bitrix\"\npassword_env = \"PATH\"\npassword_file = \"mysql.pw\"",
        )],
        line: None,
        key: "mysql",
        words: &["set password_env or password_file, not both"],
    },
    ConfigCase {
        name: "metrics listen address without a port",
        edits: &[("listen = \"127.0.0.1:9187\"", "listen = \"localhost\"")],
        line: None,
        key: "metrics.listen",
        words: &["\"localhost\" is not a socket address like 127.0.0.1:9187"],
    },
    ConfigCase {
        name: "source_time_zone not an IANA name",
        edits: &[("Asia/Almaty", "GMT+5:00")],
        line: None,
        key: "source_time_zone",
        words: &["\"GMT+5:00\" is not an IANA time zone name", "Asia/Almaty"],
    },
    ConfigCase {
        name: "batch_max_rows = 0",
        edits: &[("batch_max_rows = 50000", "batch_max_rows = 0")],
        line: None,
        key: "apply.batch_max_rows",
        words: &["must be at least 1"],
    },
    ConfigCase {
        name: "read_timeout_s = 1",
        edits: &[("dbname = \"crm\"", "dbname = \"crm\"\nread_timeout_s = 1")],
        line: None,
        key: "postgres.read_timeout_s",
        words: &["too short", "at least 3 seconds"],
    },
    ConfigCase {
        name: "snapshot chunk_rows = 0",
        edits: &[("chunk_rows = 5000", "chunk_rows = 0")],
        line: None,
        key: "snapshot.chunk_rows",
        words: &["must be at least 1"],
    },
    ConfigCase {
        name: "snapshot on_start not a boolean",
        edits: &[("chunk_rows = 5000", "on_start = \"yes\"")],
        line: Some(24),
        key: "snapshot.on_start",
        words: &["invalid type: string \"yes\", expected a boolean"],
    },
    ConfigCase {
        name: "start_position without an offset",
        edits: &[(
            "database = \"bitrix\"",
            "database = \"bitrix\"\nstart_position = \"mysql-bin.000042\"",
        )],
        line: None,
        key: "mysql.start_position",
        words: &[
            "bad binlog position \"mysql-bin.000042\": expected file:pos",
            "mysql-bin.000042:4",
        ],
    },
    ConfigCase {
        name: "start_position with a bad GTID",
        edits: &[(
            "database = \"bitrix\"",
            "database = \"bitrix\"\nstart_position = \"mysql-bin.000042:1234@0-1\"",
        )],
        line: None,
        key: "mysql.start_position",
        words: &[
            "bad MariaDB GTID \"0-1\"",
            "expected domain-server-sequence",
        ],
    },
    ConfigCase {
        name: "empty pipeline name",
        edits: &[("pipeline = \"shop\"", "pipeline = \"\"")],
        line: None,
        key: "pipeline",
        words: &["\"\" must be 1-40 characters of a-z, 0-9 and _"],
    },
    ConfigCase {
        name: "pipeline name that breaks slot and origin names",
        edits: &[("pipeline = \"shop\"", "pipeline = \"Shop-KZ\"")],
        line: None,
        key: "pipeline",
        words: &[
            "\"Shop-KZ\" must be 1-40 characters of a-z, 0-9 and _",
            "replication origins",
        ],
    },
    ConfigCase {
        name: "server_id = 0",
        edits: &[("port = 3306", "port = 3306\nserver_id = 0")],
        line: None,
        key: "mysql.server_id",
        words: &["must not be 0"],
    },
];

/// The message of a config that must not load.
fn config_error(path: &Path) -> Result<String, String> {
    match Config::load(path) {
        Ok(_) => Err(format!("{} loaded, but must not", path.display())),
        Err(e) if e.kind() != ErrorKind::Config => Err(format!("not a config error: {e}")),
        Err(e) => Ok(e.to_string()),
    }
}

/// `file:line: key `path`: `, the start of a message; without a key for a TOML syntax error.
fn head(file: &Path, line: Option<usize>, key: &str) -> String {
    let line = line.map(|l| format!(":{l}")).unwrap_or_default();
    if key.is_empty() {
        format!("{}{line}: TOML syntax error: ", file.display())
    } else {
        format!("{}{line}: key `{key}`: ", file.display())
    }
}

#[test]
fn malformed_configs_name_file_line_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("duplex.toml");
    std::fs::write(&good, GOOD_CONFIG).unwrap();
    Config::load(&good).expect("the good config loads");
    assert!(std::env::var_os(UNSET_ENV).is_none());

    let mut failures = Vec::new();
    for (i, case) in CONFIG_CASES.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.toml"));
        std::fs::write(&path, edit(GOOD_CONFIG, case.edits)).unwrap();
        let msg = match config_error(&path) {
            Ok(m) => m,
            Err(why) => {
                failures.push(format!("{}: {why}", case.name));
                continue;
            }
        };
        let mut want = vec![head(&path, case.line, case.key)];
        want.extend(
            case.words
                .iter()
                .map(|w| w.replace("{dir}", &dir.path().display().to_string())),
        );
        let missing: Vec<&String> = want.iter().filter(|w| !msg.contains(w.as_str())).collect();
        if !missing.is_empty() || msg.lines().count() != 1 {
            failures.push(format!(
                "{}: missing {missing:?} (or more than one line) in:\n  {msg}",
                case.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} config cases failed:\n{}",
        failures.len(),
        CONFIG_CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let msg = config_error(&path).unwrap();
    assert!(
        msg.starts_with(&format!("{}: cannot read: ", path.display())),
        "{msg}"
    );
    assert!(msg.contains("No such file or directory"), "{msg}");
}

/// The operator sees the same message from the binary, on stderr, with exit code 2 and before
/// any server is contacted.
#[test]
fn the_binary_refuses_a_bad_config_with_exit_code_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("duplex.toml");
    std::fs::write(
        &path,
        edit(
            GOOD_CONFIG,
            &[(
                "database = \"bitrix\"",
                "database = \"bitrix\"\npasword = \"x\"",
            )],
        ),
    )
    .unwrap();
    // The file given after the command, before it, or in DUPLEX_CONFIG: EX_CONFIG (78), which
    // the systemd unit does not restart on.
    for (command, how) in [
        ("check", "after"),
        ("run", "after"),
        ("setup", "after"),
        ("run", "before"),
        ("run", "env"),
    ] {
        let mut cmd = std::process::Command::new(support::harness::duplex_bin());
        match how {
            "after" => cmd.arg(command).arg("-c").arg(&path),
            "before" => cmd.arg("--config").arg(&path).arg(command),
            _ => cmd.arg(command).env("DUPLEX_CONFIG", &path),
        };
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{command} ({how}): {stderr}");
        assert!(
            stderr.contains(&format!(
                "error: {}:10: key `mysql.pasword`: unknown field `pasword`",
                path.display()
            )),
            "{command}: {stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Mapping files

/// One expected error: file, line, key path, words.
type Want = (&'static str, usize, &'static str, &'static [&'static str]);

struct MappingCase {
    name: &'static str,
    /// (file name, text) of the mapping directory.
    files: &'static [(&'static str, &'static str)],
    /// Every error the case must produce, and no other.
    want: &'static [Want],
}

/// Checks a mapping error message against a case: each wanted error is one line of it that
/// starts with `file:line: key `path`: ` and holds the words; no other lines.
fn check_mapping_message(case: &MappingCase, dir: &Path, msg: &str) -> Option<String> {
    let lines: Vec<&str> = msg.lines().collect();
    let mut problems = Vec::new();
    for (file, line, key, words) in case.want {
        let head = head(&dir.join(file), Some(*line), key);
        let found = lines
            .iter()
            .any(|l| l.starts_with(&head) && words.iter().all(|w| l.contains(w)));
        if !found {
            problems.push(format!("no line `{head}…` with {words:?}"));
        }
    }
    if lines.len() != case.want.len() {
        problems.push(format!(
            "{} error line(s), expected {}",
            lines.len(),
            case.want.len()
        ));
    }
    if problems.is_empty() {
        None
    } else {
        Some(format!(
            "{}:\n  {}\n  message:\n    {}",
            case.name,
            problems.join("\n  "),
            lines.join("\n    ")
        ))
    }
}

/// Writes a case's files into a fresh directory.
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

const PARSE_CASES: &[MappingCase] = &[
    MappingCase {
        name: "TOML syntax error (unclosed array)",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\nkey = [\"ID\"\n\n[table.column]\nID = \"bitrix_order_id\"\n",
        )],
        want: &[("orders.toml", 6, "", &["missing comma between array elements"])],
    },
    MappingCase {
        name: "unknown key in a table entry",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\ncolums = \"all\"\n",
        )],
        want: &[(
            "orders.toml",
            4,
            "table[0].colums",
            &["unknown field `colums`", "`columns`"],
        )],
    },
    MappingCase {
        name: "missing target",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\n\n[table.column]\nID = \"bitrix_order_id\"\n",
        )],
        want: &[("orders.toml", 1, "table[0].target", &["missing field `target`"])],
    },
    MappingCase {
        name: "missing source (second entry)",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[[table]]\ntarget = \"notes\"\n",
        )],
        want: &[("orders.toml", 5, "table[1].source", &["missing field `source`"])],
    },
    MappingCase {
        name: "bad direction",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\ndirection = \"backward\"\n",
        )],
        want: &[(
            "orders.toml",
            4,
            "table[0].direction",
            &["unknown variant `backward`", "`forward`, `reverse`, `both`"],
        )],
    },
    MappingCase {
        name: "bad on_delete",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\non_delete = \"cascade\"\n",
        )],
        want: &[(
            "orders.toml",
            4,
            "table[0].on_delete",
            &["unknown variant `cascade`", "`delete`, `clear`, `ignore`"],
        )],
    },
    MappingCase {
        name: "key as a string, not a list",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\nkey = \"ID\"\n",
        )],
        want: &[(
            "orders.toml",
            4,
            "table[0].key",
            &["invalid type: string \"ID\", expected a sequence"],
        )],
    },
    MappingCase {
        name: "unknown key in a column entry",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\nPRICE = { too = \"total\" }\n",
        )],
        want: &[(
            "orders.toml",
            7,
            "table[0].column.PRICE",
            &["unknown field `too`", "`to`, `skip`, `transform`"],
        )],
    },
    MappingCase {
        name: "null_if of the wrong type",
        files: &[(
            "users.toml",
            "[[table]]\nsource = \"b_user\"\ntarget = \"users\"\n\n[table.column]\nID = \"bitrix_user_id\"\nEMAIL = { to = \"email\", null_if = \"noemail@cvety.kz\" }\n",
        )],
        want: &[(
            "users.toml",
            7,
            "table[0].column.EMAIL",
            &["null_if", "expected a sequence"],
        )],
    },
    MappingCase {
        name: "transform of the wrong type",
        files: &[(
            "users.toml",
            "[[table]]\nsource = \"b_user\"\ntarget = \"users\"\n\n[table.column]\nID = \"bitrix_user_id\"\nNAME = { to = \"name\", transform = 1 }\n",
        )],
        want: &[(
            "users.toml",
            7,
            "table[0].column.NAME",
            &["transform", "expected a string or a list of strings"],
        )],
    },
    MappingCase {
        name: "filter test with an unknown key",
        files: &[(
            "catalog.toml",
            "[[table]]\nsource = \"b_iblock_element\"\ntarget = \"products\"\n\n[table.filter]\nWF_PARENT_ELEMENT_ID = { nul = true }\n",
        )],
        want: &[(
            "catalog.toml",
            6,
            "table[0].filter.WF_PARENT_ELEMENT_ID",
            &["unknown field `nul`", "`in`, `not_in`, `null`"],
        )],
    },
    MappingCase {
        name: "pack given a number",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.pack]\nmetadata = 5\n",
        )],
        want: &[(
            "orders.toml",
            6,
            "table[0].pack.metadata",
            &["expected a list of source columns", "or \"rest\""],
        )],
    },
    MappingCase {
        name: "incomplete pivot (no value column)",
        files: &[(
            "props.toml",
            "[[table]]\nsource = \"b_sale_order_props_value\"\ntarget = \"orders\"\nkey = [\"ORDER_ID\"]\n\n[table.pivot]\nname = \"CODE\"\n\n[table.pivot.code]\nFIO = { to = \"name\" }\n",
        )],
        want: &[(
            "props.toml",
            6,
            "table[0].pivot.value",
            &["missing field `value`"],
        )],
    },
    MappingCase {
        name: "incomplete lookup (no take)",
        files: &[(
            "items.toml",
            "[[table]]\nsource = \"b_sale_basket\"\ntarget = \"order_items\"\n\n[table.lookup.order_id]\nfrom = \"bitrix_order_id\"\ntable = \"orders\"\nmatch = \"bitrix_order_id\"\n",
        )],
        want: &[(
            "items.toml",
            5,
            "table[0].lookup.order_id.take",
            &["missing field `take`"],
        )],
    },
    MappingCase {
        name: "unknown key in a lookup written as its own table",
        files: &[(
            "items.toml",
            "[[table]]\nsource = \"b_sale_basket\"\ntarget = \"order_items\"\n\n[table.lookup.order_id]\nfrom = \"bitrix_order_id\"\ntable = \"orders\"\nmatch = \"bitrix_order_id\"\ntkae = \"id\"\n",
        )],
        want: &[(
            "items.toml",
            9,
            "table[0].lookup.order_id.tkae",
            &["unknown field `tkae`", "`from`, `table`, `match`, `take`"],
        )],
    },
    MappingCase {
        name: "bad entry in a list of column entries",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nSTATUS_ID = [\n    { to = \"status\", map = \"order_status\" },\n    { to = \"bitrix_status\", on_error = \"skip\" },\n]\n",
        )],
        want: &[(
            "orders.toml",
            6,
            "table[0].column.STATUS_ID",
            &["[1].on_error: unknown variant `skip`"],
        )],
    },
    MappingCase {
        name: "pivot code with a misspelt key",
        files: &[(
            "props.toml",
            "[[table]]\nsource = \"b_sale_order_props_value\"\ntarget = \"orders\"\nkey = [\"ORDER_ID\"]\n\n[table.pivot]\nname = \"CODE\"\nvalue = \"VALUE\"\n\n[table.pivot.code]\nFIO = { to = \"recipient\", priorty = 2 }\n",
        )],
        want: &[(
            "props.toml",
            11,
            "table[0].pivot.code.FIO",
            &["unknown field `priorty`", "`priority`"],
        )],
    },
    MappingCase {
        name: "filter given a bare list",
        files: &[(
            "catalog.toml",
            "[[table]]\nsource = \"b_catalog_price\"\ntarget = \"products\"\n\n[table.filter]\nCATALOG_GROUP_ID = [1, 2]\n",
        )],
        want: &[(
            "catalog.toml",
            6,
            "table[0].filter.CATALOG_GROUP_ID",
            &["a list is not a value to compare with", "{ in = [...] }"],
        )],
    },
    MappingCase {
        name: "value map without values",
        files: &[("maps.toml", "[map.order_status]\ndefault = \"new\"\n")],
        want: &[(
            "maps.toml",
            1,
            "map.order_status.values",
            &["missing field `values`"],
        )],
    },
    MappingCase {
        name: "errors of two files reported together",
        files: &[
            (
                "a.toml",
                "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\ndirection = \"sideways\"\n",
            ),
            (
                "b.toml",
                "[[table]]\nsource = \"b_user\"\ntarget = \"users\"\nreverse_write = \"insert\"\n",
            ),
        ],
        want: &[
            ("a.toml", 4, "table[0].direction", &["unknown variant `sideways`"]),
            (
                "b.toml",
                4,
                "table[0].reverse_write",
                &["unknown variant `insert`", "expected `upsert` or `update`"],
            ),
        ],
    },
];

#[test]
fn malformed_mapping_files_name_file_line_key() {
    let root = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, case) in PARSE_CASES.iter().enumerate() {
        let dir = root.path().join(format!("case{i}"));
        write_files(&dir, case.files);
        let msg = match duplex::mapping::load_dir(&dir) {
            Ok(_) => {
                failures.push(format!("{}: loaded, but must not", case.name));
                continue;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Mapping, "{}: {e}", case.name);
                e.to_string()
            }
        };
        failures.extend(check_mapping_message(case, &dir, &msg));
    }
    assert!(
        failures.is_empty(),
        "{} of {} mapping parse cases failed:\n{}",
        failures.len(),
        PARSE_CASES.len(),
        failures.join("\n")
    );
}

/// The parser the cases above exercise still reads every form of the shipped set.
#[test]
fn the_shipped_mapping_set_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/bitrix");
    let set = duplex::mapping::load_dir(&dir).expect("mappings/bitrix parses");
    assert!(set.files.len() >= 5, "{:?}", set.dir);
}

#[test]
fn missing_or_empty_mapping_directory_is_named() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("nope");
    let e = duplex::mapping::load_dir(&missing).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "mapping directory {}: cannot read: ",
            missing.display()
        )),
        "{e}"
    );
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("orders.tml"), "[[table]]\n").unwrap();
    let e = duplex::mapping::load_dir(&empty).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("mapping directory {}: no *.toml files", empty.display())
    );
}

// ---------------------------------------------------------------------------------------------
// Mapping files against the live schemas

const MYSQL_DDL: &[&str] = &[
    "CREATE TABLE b_sale_order (ID int PRIMARY KEY, PRICE decimal(18,4) NOT NULL, LID char(2) NOT NULL, \
     STATUS_ID char(2) NOT NULL DEFAULT 'N', DATE_UPDATE datetime NULL)",
    "CREATE TABLE b_sale_order_props_value (ID int PRIMARY KEY, ORDER_ID int NOT NULL, \
     CODE varchar(50) NOT NULL, VALUE varchar(255) NULL)",
    "CREATE TABLE b_event_log (MESSAGE varchar(255) NOT NULL)",
];

const PG_DDL: &str = "
CREATE TABLE orders (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), bitrix_order_id integer UNIQUE,
    total numeric(18,4), lid integer, site text, status text, recipient text, meta jsonb,
    updated_at timestamp);
CREATE TABLE order_notes (bitrix_note_id integer PRIMARY KEY, bitrix_order_id integer,
    note text, order_id uuid);
CREATE TABLE event_log (message text);
";

/// A mapping that compiles; the cases below are edits of it (line numbers refer to them).
const GOOD_ORDERS: &str = "[[table]]
source = \"b_sale_order\"
target = \"orders\"

[table.column]
ID = \"bitrix_order_id\"
PRICE = \"total\"
LID = \"site\"
";

const SCHEMA_CASES: &[MappingCase] = &[
    MappingCase {
        name: "source column that does not exist",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\nPRCE = \"total\"\n",
        )],
        want: &[(
            "orders.toml",
            7,
            "table[0].column.PRCE",
            &["column PRCE does not exist in source table {my}.b_sale_order"],
        )],
    },
    MappingCase {
        name: "source table that does not exist",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_ordr\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\n",
        )],
        want: &[(
            "orders.toml",
            2,
            "table[0].source",
            &["source table {my}.b_sale_ordr does not exist in MySQL"],
        )],
    },
    MappingCase {
        name: "target table that does not exist",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"order\"\n\n[table.column]\nID = \"bitrix_order_id\"\n",
        )],
        want: &[(
            "orders.toml",
            3,
            "table[0].target",
            &["target table public.order does not exist in PostgreSQL"],
        )],
    },
    MappingCase {
        name: "target column that does not exist",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\nPRICE = { to = \"totl\" }\n",
        )],
        want: &[(
            "orders.toml",
            7,
            "table[0].column.PRICE",
            &["target column totl does not exist in public.orders (source column PRICE)"],
        )],
    },
    MappingCase {
        name: "text into an integer column without a transform",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\nLID = \"lid\"\n",
        )],
        want: &[(
            "orders.toml",
            7,
            "table[0].column.LID",
            &["cannot convert text (utf8mb3) column LID (char(2)) to integer column public.orders.lid"],
        )],
    },
    MappingCase {
        name: "key column not mapped",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nPRICE = \"total\"\n",
        )],
        want: &[(
            "orders.toml",
            2,
            "table[0].key",
            &["key column ID of {my}.b_sale_order is not mapped to a target column"],
        )],
    },
    MappingCase {
        name: "key without a unique index on the target",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\nkey = [\"LID\"]\n\n[table.column]\nID = \"bitrix_order_id\"\nLID = \"site\"\n",
        )],
        want: &[(
            "orders.toml",
            4,
            "table[0].key",
            &["target public.orders has no primary key or unique index on (site)"],
        )],
    },
    MappingCase {
        name: "source without a primary key and no key given",
        files: &[(
            "log.toml",
            "[[table]]\nsource = \"b_event_log\"\ntarget = \"event_log\"\ncolumns = \"all\"\n",
        )],
        want: &[(
            "log.toml",
            2,
            "table[0].key",
            &["source table {my}.b_event_log has no primary key", "key = [\"...\"]"],
        )],
    },
    MappingCase {
        name: "unknown transform",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\nLID = { to = \"site\", transform = [\"trim\", \"lower\"] }\n",
        )],
        want: &[(
            "orders.toml",
            7,
            "table[0].column.LID",
            &["unknown transform \"lower\"", "built-ins: "],
        )],
    },
    MappingCase {
        name: "map that cannot be read backwards on a column going both ways",
        files: &[
            (
                "maps.toml",
                "[map.order_status.values]\nN = \"new\"\nP = \"paid\"\nPD = \"paid\"\n",
            ),
            (
                "orders.toml",
                "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\ndirection = \"both\"\n\n[table.column]\nID = \"bitrix_order_id\"\nSTATUS_ID = { to = \"status\", map = \"order_status\" }\n",
            ),
        ],
        want: &[(
            "orders.toml",
            8,
            "table[0].column.STATUS_ID",
            &[
                "map order_status cannot be read backwards",
                "value \"paid\" is the image of 2 codes (P, PD)",
                "[map.order_status.reverse]",
            ],
        )],
    },
    MappingCase {
        name: "map that is not defined",
        files: &[
            ("maps.toml", "[map.order_status.values]\nN = \"new\"\n"),
            (
                "orders.toml",
                "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\nSTATUS_ID = { to = \"status\", map = \"order_stat\" }\n",
            ),
        ],
        want: &[(
            "orders.toml",
            7,
            "table[0].column.STATUS_ID",
            &["no map named \"order_stat\" (defined: order_status)"],
        )],
    },
    MappingCase {
        name: "map defined in two files",
        files: &[
            ("a_maps.toml", "[map.order_status.values]\nN = \"new\"\n"),
            ("b_maps.toml", "\n[map.order_status.values]\nN = \"neu\"\n"),
            ("orders.toml", GOOD_ORDERS),
        ],
        want: &[(
            "b_maps.toml",
            2,
            "map.order_status",
            &["map order_status is already defined at {dir}/a_maps.toml:1"],
        )],
    },
    MappingCase {
        name: "filter on a column that does not exist",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.filter]\nSITE_ID = \"s1\"\n\n[table.column]\nID = \"bitrix_order_id\"\n",
        )],
        want: &[(
            "orders.toml",
            6,
            "table[0].filter.SITE_ID",
            &["column SITE_ID does not exist in source table {my}.b_sale_order"],
        )],
    },
    MappingCase {
        name: "filter giving two tests at once",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.filter]\nLID = { in = [\"s1\"], null = false }\n\n[table.column]\nID = \"bitrix_order_id\"\n",
        )],
        want: &[(
            "orders.toml",
            6,
            "table[0].filter.LID",
            &["give exactly one of in, not_in, null"],
        )],
    },
    MappingCase {
        name: "two files writing the same target column",
        files: &[
            ("a_orders.toml", GOOD_ORDERS),
            (
                "b_props.toml",
                "[[table]]\nsource = \"b_sale_order_props_value\"\ntarget = \"orders\"\nkey = [\"ORDER_ID\"]\non_delete = \"clear\"\n\n[table.column]\nORDER_ID = \"bitrix_order_id\"\nVALUE = \"site\"\n",
            ),
        ],
        want: &[(
            "b_props.toml",
            1,
            "column",
            &[
                "target column public.orders.site (from VALUE) is also written by the entry at {dir}/a_orders.toml:1",
                "give each column one writer",
            ],
        )],
    },
    MappingCase {
        name: "two entries deleting rows of one target",
        files: &[
            ("a_orders.toml", GOOD_ORDERS),
            (
                "b_props.toml",
                "[[table]]\nsource = \"b_sale_order_props_value\"\ntarget = \"orders\"\nkey = [\"ORDER_ID\"]\n\n[table.column]\nORDER_ID = \"bitrix_order_id\"\nVALUE = \"recipient\"\n",
            ),
        ],
        want: &[(
            "b_props.toml",
            1,
            "on_delete",
            &[
                "target public.orders is fed by 2 entries that delete its rows",
                "also at {dir}/a_orders.toml:1",
                "on_delete = \"clear\"",
            ],
        )],
    },
    MappingCase {
        name: "two source columns feeding one target column",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\nLID = \"site\"\nSTATUS_ID = \"site\"\n",
        )],
        want: &[(
            "orders.toml",
            8,
            "table[0].column.STATUS_ID",
            &["target column site is fed by both LID and STATUS_ID"],
        )],
    },
    MappingCase {
        name: "lookup in a table that does not exist",
        files: &[(
            "notes.toml",
            "[[table]]\nsource = \"b_sale_order_props_value\"\ntarget = \"order_notes\"\n\n[table.column]\nID = \"bitrix_note_id\"\nORDER_ID = \"bitrix_order_id\"\nVALUE = \"note\"\n\n[table.lookup.order_id]\nfrom = \"bitrix_order_id\"\ntable = \"order\"\nmatch = \"bitrix_order_id\"\ntake = \"id\"\n",
        )],
        want: &[(
            "notes.toml",
            10,
            "table[0].lookup.order_id",
            &["table public.order does not exist in PostgreSQL"],
        )],
    },
    MappingCase {
        name: "lookup from a column the entry does not write",
        files: &[(
            "notes.toml",
            "[[table]]\nsource = \"b_sale_order_props_value\"\ntarget = \"order_notes\"\n\n[table.column]\nID = \"bitrix_note_id\"\nVALUE = \"note\"\n\n[table.lookup.order_id]\nfrom = \"bitrix_order_id\"\ntable = \"orders\"\nmatch = \"bitrix_order_id\"\ntake = \"id\"\n",
        )],
        want: &[(
            "notes.toml",
            9,
            "table[0].lookup.order_id",
            &["from = \"bitrix_order_id\" must be a target column this entry writes"],
        )],
    },
    MappingCase {
        name: "pivot on a column that does not exist, without a key",
        files: &[(
            "props.toml",
            "[[table]]\nsource = \"b_sale_order_props_value\"\ntarget = \"orders\"\n\n[table.column]\nORDER_ID = \"bitrix_order_id\"\n\n[table.pivot]\nname = \"CODE\"\nvalue = \"VAL\"\n\n[table.pivot.code]\nFIO = { to = \"recipient\" }\n",
        )],
        want: &[
            (
                "props.toml",
                2,
                "table[0].key",
                &["key column ID of {my}.b_sale_order_props_value is not mapped"],
            ),
            (
                "props.toml",
                8,
                "table[0].pivot",
                &["column VAL does not exist in source table {my}.b_sale_order_props_value"],
            ),
            (
                "props.toml",
                8,
                "table[0].pivot",
                &["a pivot needs key = [\"<column naming the target row>\"]"],
            ),
        ],
    },
    MappingCase {
        name: "pivot codes with the same priority on one column",
        files: &[(
            "props.toml",
            "[[table]]\nsource = \"b_sale_order_props_value\"\ntarget = \"orders\"\nkey = [\"ORDER_ID\"]\n\n[table.column]\nORDER_ID = \"bitrix_order_id\"\n\n[table.pivot]\nname = \"CODE\"\nvalue = \"VALUE\"\n\n[table.pivot.code]\nFIO = { to = \"recipient\" }\nnameRecipient = { to = \"recipient\" }\n",
        )],
        want: &[(
            "props.toml",
            15,
            "table[0].pivot.code.nameRecipient",
            &[
                "codes FIO and nameRecipient both feed recipient with priority 0",
                "give them different priorities",
            ],
        )],
    },
    MappingCase {
        name: "constant that does not fit its column",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\n\n[table.set]\nlid = \"s1\"\n",
        )],
        want: &[(
            "orders.toml",
            9,
            "table[0].set.lid",
            &["cannot convert the constant s1 to integer column public.orders.lid"],
        )],
    },
    MappingCase {
        name: "pack into a column that is not json",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\n\n[table.pack]\nsite = [\"LID\"]\n",
        )],
        want: &[(
            "orders.toml",
            9,
            "table[0].pack.site",
            &["pack writes a json object, but public.orders.site is text"],
        )],
    },
    MappingCase {
        name: "bad parse_date format and bad zone",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\nLID = { to = \"site\", parse_date = \"%d.%m.%Q\" }\nDATE_UPDATE = { to = \"updated_at\", zone = \"Almaty\" }\n",
        )],
        want: &[
            (
                "orders.toml",
                7,
                "table[0].column.LID",
                &["parse_date format \"%d.%m.%Q\" is not a valid chrono format"],
            ),
            (
                "orders.toml",
                8,
                "table[0].column.DATE_UPDATE",
                &["zone \"Almaty\" is not an IANA time zone name"],
            ),
        ],
    },
    MappingCase {
        name: "column direction in a table mapped one way",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\nSTATUS_ID = { to = \"status\", direction = \"both\" }\n",
        )],
        want: &[(
            "orders.toml",
            7,
            "table[0].column.STATUS_ID",
            &["a column can go Both only in a table mapped both ways (this table is Forward)"],
        )],
    },
    MappingCase {
        name: "reverse_set on a forward table",
        files: &[(
            "orders.toml",
            "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n\n[table.column]\nID = \"bitrix_order_id\"\n\n[table.reverse_set]\nDATE_UPDATE = { value = \"commit_time\" }\n",
        )],
        want: &[(
            "orders.toml",
            9,
            "table[0].reverse_set.DATE_UPDATE",
            &["reverse_set needs direction = \"both\" or \"reverse\""],
        )],
    },
];

/// `duplex.toml` for a test's databases, reading both passwords from a file next to it.
fn live_config(dir: &Path, dbs: &support::TestDbs) -> Config {
    let s = support::servers();
    std::fs::write(dir.join("db.pw"), &s.mysql_password).unwrap();
    assert_eq!(s.mysql_password, s.pg_password);
    let text = format!(
        r#"pipeline = "bad_input"
mappings = "mappings"

[mysql]
host = "127.0.0.1"
port = {mp}
user = "{mu}"
password_file = "db.pw"
database = "{mdb}"

[postgres]
host = "127.0.0.1"
port = {pp}
user = "{pu}"
password_file = "db.pw"
dbname = "{pdb}"
"#,
        mp = s.mysql_port,
        mu = s.mysql_user,
        mdb = dbs.mysql_db,
        pp = s.pg_port,
        pu = s.pg_user,
        pdb = dbs.pg_db,
    );
    let path = dir.join("duplex.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).expect("the live config loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mappings_that_do_not_fit_the_live_schemas_name_file_line_key() {
    let dbs = support::fresh_dbs("bad_input").await;
    let mut my = dbs.mysql().await;
    for ddl in MYSQL_DDL {
        my.query_drop(*ddl).await.unwrap();
    }
    dbs.pg().await.batch_execute(PG_DDL).await.unwrap();

    let root = tempfile::tempdir().unwrap();
    let cfg = live_config(root.path(), &dbs);
    let mappings: PathBuf = cfg.mappings.clone();

    // The base of the edits compiles.
    write_files(&mappings, &[("orders.toml", GOOD_ORDERS)]);
    let plan = duplex::mapping::load_plan(&cfg)
        .await
        .expect("the good mapping compiles");
    assert_eq!(plan.tables.len(), 1);

    let mut failures = Vec::new();
    for case in SCHEMA_CASES {
        std::fs::remove_dir_all(&mappings).unwrap();
        write_files(&mappings, case.files);
        let msg = match duplex::mapping::load_plan(&cfg).await {
            Ok(_) => {
                failures.push(format!("{}: compiled, but must not", case.name));
                continue;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Mapping, "{}: {e}", case.name);
                e.to_string()
            }
        };
        // Table names carry the test's database; file references carry the directory.
        let msg = msg.replace(&format!("{}.", dbs.mysql_db), "{my}.");
        let msg = msg.replace(&format!("at {}/", mappings.display()), "at {dir}/");
        failures.extend(check_mapping_message(case, &mappings, &msg));
    }
    assert!(
        failures.is_empty(),
        "{} of {} schema cases failed:\n{}",
        failures.len(),
        SCHEMA_CASES.len(),
        failures.join("\n")
    );
}

/// `duplex check --offline` compiles the whole mapping set with no server at all: the shipped
/// set passes; a misspelt map name is named with its file, line and key.
#[test]
fn check_offline_validates_the_mapping_set_without_servers() {
    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("mappings");
    std::fs::create_dir(&maps).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/bitrix");
    for f in std::fs::read_dir(&shipped).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&f, maps.join(f.file_name().unwrap())).unwrap();
        }
    }
    // Nothing listens on port 1: a check that tried a server would fail.
    let path = dir.path().join("duplex.toml");
    std::fs::write(
        &path,
        edit(
            GOOD_CONFIG,
            &[("port = 3306", "port = 1"), ("port = 5432", "port = 1")],
        ),
    )
    .unwrap();
    let check = || {
        let out = std::process::Command::new(support::harness::duplex_bin())
            .args(["check", "--offline", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = check();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("table(s) compiled offline"), "{out}");
    let orders = maps.join("orders.toml");
    let text = std::fs::read_to_string(&orders).unwrap();
    std::fs::write(
        &orders,
        text.replacen("map = \"order_status\"", "map = \"order_stauts\"", 1),
    )
    .unwrap();
    let (code, out) = check();
    assert_eq!(code, Some(1), "{out}");
    let fail = out
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        fail.contains("orders.toml:") && fail.contains("order_stauts"),
        "{fail}"
    );
}
