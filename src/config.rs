//! `duplex.toml`: connection settings for both databases, the mapping set, the pipeline name,
//! the metrics listener and the source time zone.
//!
//! Unknown keys are errors that name the key path (`mysql.pasword`). Passwords come only from an
//! environment variable or a file, are held in [`Secret`] and never printed (its `Debug` and
//! `Display` show `***`).
//!
//! May use: the model (names, positions), the error type and `tls` (sslmode settings); nothing
//! above.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::error::{Error, Result};

pub const DEFAULT_MYSQL_PORT: u16 = 3306;
pub const DEFAULT_PG_PORT: u16 = 5432;
pub const DEFAULT_DUPLEX_DATABASE: &str = "duplex";
pub const DEFAULT_DUPLEX_SCHEMA: &str = "duplex";
pub const DEFAULT_PG_SCHEMA: &str = "public";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9187";
/// `/ready` answers 503 while a direction's lag is above this many seconds.
pub const DEFAULT_READY_MAX_LAG_S: f64 = 10.0;
pub const DEFAULT_TIME_ZONE: &str = "UTC";
pub const DEFAULT_SERVER_ID: u32 = 4_242_001;
pub const DEFAULT_BATCH_MAX_ROWS: usize = 50_000;
pub const DEFAULT_BATCH_MAX_DELAY_MS: u64 = 100;
pub const DEFAULT_CHUNK_ROWS: usize = 1_000;
pub const DEFAULT_SNAPSHOT_CHUNK_ROWS: usize = 5_000;
pub const DEFAULT_CONNECT_TIMEOUT_S: u64 = 10;

/// A password. Never printed.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    pipeline: String,
    mappings: PathBuf,
    #[serde(default = "default_tz")]
    source_time_zone: String,
    mysql: RawMysql,
    postgres: RawPostgres,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    apply: ApplyConfig,
    #[serde(default)]
    snapshot: SnapshotConfig,
    #[serde(default)]
    verify: RawVerify,
}

/// `[verify]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    interval: Option<String>,
    max_rows_per_second: Option<u64>,
}

/// `[verify]`: the verify `duplex run` does on its own.
#[derive(Debug, Clone, Default)]
pub struct VerifyConfig {
    /// How often (`None`: never, the default).
    pub interval: Option<std::time::Duration>,
    /// Source rows read per second at most.
    pub max_rows_per_second: Option<u64>,
}

/// A duration as `90s`, `15m`, `6h` or `1d`.
fn parse_interval(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].trim().parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3600)?,
        'd' => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| std::time::Duration::from_secs(secs))
}

fn default_tz() -> String {
    DEFAULT_TIME_ZONE.into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMysql {
    host: String,
    #[serde(default = "default_mysql_port")]
    port: u16,
    user: String,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    database: String,
    #[serde(default = "default_server_id")]
    server_id: u32,
    #[serde(default = "default_duplex_db")]
    duplex_database: String,
    start_position: Option<String>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_s: u64,
    #[serde(default = "default_read_timeout")]
    read_timeout_s: u64,
    sslmode: Option<crate::tls::SslMode>,
    sslrootcert: Option<PathBuf>,
    sslcert: Option<PathBuf>,
    sslkey: Option<PathBuf>,
}

/// One side's TLS settings (libpq's key names); paths are relative to the config file.
fn tls(
    host: &str,
    mode: Option<crate::tls::SslMode>,
    files: [Option<PathBuf>; 3],
    base: &Path,
) -> crate::tls::Tls {
    let [root, cert, key] = files.map(|f| f.map(|p| base.join(p)));
    crate::tls::Tls {
        mode: mode.unwrap_or_else(|| crate::tls::SslMode::default_for(host)),
        root_cert: root,
        client_cert: cert,
        client_key: key,
    }
}

fn default_mysql_port() -> u16 {
    DEFAULT_MYSQL_PORT
}
fn default_server_id() -> u32 {
    DEFAULT_SERVER_ID
}
fn default_duplex_db() -> String {
    DEFAULT_DUPLEX_DATABASE.into()
}
/// A silent server (a dead connection, a failover that blackholes the old address) is noticed
/// within this many seconds.
fn default_read_timeout() -> u64 {
    15
}

fn default_connect_timeout() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_S
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    host: String,
    #[serde(default = "default_pg_port")]
    port: u16,
    user: String,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    dbname: String,
    #[serde(default = "default_pg_schema")]
    schema: String,
    #[serde(default = "default_duplex_schema")]
    duplex_schema: String,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_s: u64,
    #[serde(default = "default_read_timeout")]
    read_timeout_s: u64,
    #[serde(default)]
    skip_all_origins: bool,
    sslmode: Option<crate::tls::SslMode>,
    sslrootcert: Option<PathBuf>,
    sslcert: Option<PathBuf>,
    sslkey: Option<PathBuf>,
}

fn default_pg_port() -> u16 {
    DEFAULT_PG_PORT
}
fn default_pg_schema() -> String {
    DEFAULT_PG_SCHEMA.into()
}
fn default_duplex_schema() -> String {
    DEFAULT_DUPLEX_SCHEMA.into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_ready_max_lag")]
    ready_max_lag_s: f64,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: default_listen(),
            ready_max_lag_s: default_ready_max_lag(),
        }
    }
}

fn default_ready_max_lag() -> f64 {
    DEFAULT_READY_MAX_LAG_S
}

fn default_listen() -> String {
    DEFAULT_METRICS_LISTEN.into()
}

/// How the sink groups source transactions into target transactions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfig {
    /// Commit a target transaction once it holds this many rows (at a source transaction end).
    #[serde(default = "default_batch_rows")]
    pub batch_max_rows: usize,
    /// Commit at the latest this long after the first transaction of a batch arrived.
    #[serde(default = "default_batch_delay")]
    pub batch_max_delay_ms: u64,
    /// Rows per chunk a source sends; also the sink's write unit.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            batch_max_rows: DEFAULT_BATCH_MAX_ROWS,
            batch_max_delay_ms: DEFAULT_BATCH_MAX_DELAY_MS,
            chunk_rows: DEFAULT_CHUNK_ROWS,
        }
    }
}

/// `[snapshot]`: the initial copy of existing rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Rows per chunk: the unit of reading, of one target transaction and of resuming.
    #[serde(default = "default_snapshot_chunk_rows")]
    pub chunk_rows: usize,
    /// Whether `duplex run` first copies tables that were never copied. Unset: yes, unless
    /// `mysql.start_position` is set (streaming from a given position means the rows before it
    /// are already on the other side).
    pub on_start: Option<bool>,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            chunk_rows: DEFAULT_SNAPSHOT_CHUNK_ROWS,
            on_start: None,
        }
    }
}

fn default_snapshot_chunk_rows() -> usize {
    DEFAULT_SNAPSHOT_CHUNK_ROWS
}

fn default_batch_rows() -> usize {
    DEFAULT_BATCH_MAX_ROWS
}
fn default_batch_delay() -> u64 {
    DEFAULT_BATCH_MAX_DELAY_MS
}
fn default_chunk_rows() -> usize {
    DEFAULT_CHUNK_ROWS
}

#[derive(Debug, Clone)]
pub struct MysqlConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub database: String,
    pub server_id: u32,
    pub duplex_database: String,
    pub start_position: Option<String>,
    pub connect_timeout_s: u64,
    /// A connection that brings nothing for this long while duplex waits on it is dead:
    /// dropped and made again (binlog: the server's heartbeat comes every third of it).
    pub read_timeout_s: u64,
    pub tls: crate::tls::Tls,
}

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub dbname: String,
    pub schema: String,
    pub duplex_schema: String,
    pub connect_timeout_s: u64,
    /// A connection that brings nothing for this long while duplex waits on it is dead:
    /// dropped and made again (the replication stream asks the server for a reply every few
    /// seconds).
    pub read_timeout_s: u64,
    /// On PostgreSQL 16+, ask the server not to send any origin-tagged transaction
    /// (`origin 'none'`): cheaper than dropping duplex's own on our side, but it also drops
    /// every other tool's replicated writes. Off by default.
    pub skip_all_origins: bool,
    pub tls: crate::tls::Tls,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub pipeline: String,
    /// The mapping directory, resolved against the config file's directory.
    pub mappings: PathBuf,
    pub source_time_zone: chrono_tz::Tz,
    pub mysql: MysqlConfig,
    pub postgres: PostgresConfig,
    pub metrics_listen: std::net::SocketAddr,
    /// `/ready` fails while the heartbeat lag of a direction is above this.
    pub ready_max_lag: std::time::Duration,
    pub apply: ApplyConfig,
    pub snapshot: SnapshotConfig,
    pub verify: VerifyConfig,
}

impl Config {
    /// Whether tables never copied are copied before streaming (see [`SnapshotConfig::on_start`]).
    pub fn snapshot_on_start(&self) -> bool {
        self.snapshot
            .on_start
            .unwrap_or(self.mysql.start_position.is_none())
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("{}: cannot read: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is used for messages and relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let raw = Self::parse_raw(text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let err = |key: &str, msg: String| {
            Error::config(format!("{}: key `{key}`: {msg}", path.display()))
        };

        Self::check_pipeline_name(&raw.pipeline, &err)?;
        let source_time_zone = Self::parse_time_zone(&raw.source_time_zone, &err)?;
        let (metrics_listen, ready_max_lag) = Self::parse_metrics(&raw.metrics, &err)?;
        Self::check_rows_and_mysql(&raw, &err)?;
        let interval = match &raw.verify.interval {
            None => None,
            Some(t) => Some(parse_interval(t).ok_or_else(|| {
                err(
                    "verify.interval",
                    format!("{t:?} is not a duration such as \"90s\", \"15m\", \"6h\" or \"1d\""),
                )
            })?),
        };
        let verify = VerifyConfig {
            interval,
            max_rows_per_second: raw.verify.max_rows_per_second,
        };
        let mysql_password = secret(
            "mysql",
            raw.mysql.password_env.as_deref(),
            raw.mysql.password_file.as_deref(),
            base,
            path,
        )?;
        let pg_password = secret(
            "postgres",
            raw.postgres.password_env.as_deref(),
            raw.postgres.password_file.as_deref(),
            base,
            path,
        )?;
        Ok(Config {
            path: path.to_path_buf(),
            pipeline: raw.pipeline,
            mappings: base.join(raw.mappings),
            source_time_zone,
            mysql: Self::mysql_config(raw.mysql, mysql_password, base),
            postgres: Self::postgres_config(raw.postgres, pg_password, base),
            metrics_listen,
            ready_max_lag,
            apply: raw.apply,
            snapshot: raw.snapshot,
            verify,
        })
    }

    /// The TOML text as [`RawConfig`]; an error names the file, the line and the key path.
    fn parse_raw(text: &str, path: &Path) -> Result<RawConfig> {
        from_toml(text).map_err(|(key, inner)| {
            let line = inner
                .span()
                .map(|s| format!(":{}", line_of(text, s.start)))
                .unwrap_or_default();
            Error::config(format!(
                "{}{line}: {}",
                path.display(),
                toml_error_text(&key, inner.message())
            ))
        })
    }

    /// `pipeline`: 1-40 characters of a-z, 0-9 and _.
    fn check_pipeline_name(pipeline: &str, err: &impl Fn(&str, String) -> Error) -> Result<()> {
        if pipeline.is_empty()
            || pipeline.len() > 40
            || !pipeline
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(err(
                "pipeline",
                format!(
                    "{:?} must be 1-40 characters of a-z, 0-9 and _ (it names replication origins and checkpoints)",
                    pipeline
                ),
            ));
        }
        Ok(())
    }

    /// `source_time_zone`: an IANA time zone name.
    fn parse_time_zone(
        source_time_zone: &str,
        err: &impl Fn(&str, String) -> Error,
    ) -> Result<chrono_tz::Tz> {
        chrono_tz::Tz::from_str(source_time_zone).map_err(|_| {
            err(
                "source_time_zone",
                format!(
                    "{:?} is not an IANA time zone name (e.g. \"Asia/Almaty\")",
                    source_time_zone
                ),
            )
        })
    }

    /// `[metrics]`: the listener address and the `/ready` lag bound.
    fn parse_metrics(
        metrics: &RawMetrics,
        err: &impl Fn(&str, String) -> Error,
    ) -> Result<(std::net::SocketAddr, std::time::Duration)> {
        let metrics_listen = metrics.listen.parse().map_err(|_| {
            err(
                "metrics.listen",
                format!(
                    "{:?} is not a socket address like 127.0.0.1:9187",
                    metrics.listen
                ),
            )
        })?;
        let lag = metrics.ready_max_lag_s;
        // try_from: a finite but huge number would make from_secs_f64 panic.
        let ready_max_lag = std::time::Duration::try_from_secs_f64(lag)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                err(
                    "metrics.ready_max_lag_s",
                    format!("{lag} must be a number of seconds above 0 (e.g. 10)"),
                )
            })?;
        Ok((metrics_listen, ready_max_lag))
    }

    /// Row counts of at least 1, a replica server id other than 0, a well-formed start position.
    fn check_rows_and_mysql(raw: &RawConfig, err: &impl Fn(&str, String) -> Error) -> Result<()> {
        for (key, rows) in [
            ("apply.batch_max_rows", raw.apply.batch_max_rows),
            ("apply.chunk_rows", raw.apply.chunk_rows),
            ("snapshot.chunk_rows", raw.snapshot.chunk_rows),
        ] {
            if rows == 0 {
                return Err(err(key, "must be at least 1 (a number of rows)".into()));
            }
        }
        for (key, v) in [
            ("mysql.read_timeout_s", raw.mysql.read_timeout_s),
            ("postgres.read_timeout_s", raw.postgres.read_timeout_s),
        ] {
            if v < 3 {
                return Err(err(
                    key,
                    format!("{v} is too short: at least 3 seconds (the default is 15)"),
                ));
            }
        }
        if raw.mysql.server_id == 0 {
            return Err(err(
                "mysql.server_id",
                "must not be 0 (a replica needs its own id)".into(),
            ));
        }
        if let Some(p) = &raw.mysql.start_position {
            p.parse::<crate::model::MysqlPosition>().map_err(|e| {
                err(
                    "mysql.start_position",
                    format!("{e} (like \"mysql-bin.000042:4\", optionally followed by @ and the GTID state there)"),
                )
            })?;
        }
        Ok(())
    }

    /// The validated `[mysql]` section.
    fn mysql_config(raw: RawMysql, password: Secret, base: &Path) -> MysqlConfig {
        MysqlConfig {
            tls: tls(
                &raw.host,
                raw.sslmode,
                [raw.sslrootcert, raw.sslcert, raw.sslkey],
                base,
            ),
            host: raw.host,
            port: raw.port,
            user: raw.user,
            password,
            database: raw.database,
            server_id: raw.server_id,
            duplex_database: raw.duplex_database,
            start_position: raw.start_position,
            connect_timeout_s: raw.connect_timeout_s,
            read_timeout_s: raw.read_timeout_s,
        }
    }

    /// The validated `[postgres]` section.
    fn postgres_config(raw: RawPostgres, password: Secret, base: &Path) -> PostgresConfig {
        PostgresConfig {
            tls: tls(
                &raw.host,
                raw.sslmode,
                [raw.sslrootcert, raw.sslcert, raw.sslkey],
                base,
            ),
            host: raw.host,
            port: raw.port,
            user: raw.user,
            password,
            dbname: raw.dbname,
            schema: raw.schema,
            duplex_schema: raw.duplex_schema,
            connect_timeout_s: raw.connect_timeout_s,
            read_timeout_s: raw.read_timeout_s,
            skip_all_origins: raw.skip_all_origins,
        }
    }
}

/// The text of a TOML loading error after the `file:line: ` prefix, on one line: `key `path`: `
/// and the message, with the missing key itself named for a missing one; a syntax error (no key
/// path yet) says so.
/// `text` deserialized as `T`. An error comes with the key path it was found at (empty for a
/// syntax error, which toml reports before any key is read) and toml's error, whose span points
/// into `text`.
pub(crate) fn from_toml<T: serde::de::DeserializeOwned>(
    text: &str,
) -> std::result::Result<T, (String, toml::de::Error)> {
    let de = toml::Deserializer::parse(text).map_err(|e| (".".to_string(), e))?;
    serde_path_to_error::deserialize(de).map_err(|e| (e.path().to_string(), e.into_inner()))
}

pub(crate) fn toml_error_text(key: &str, message: &str) -> String {
    let message = message.trim_end().replace('\n', ", ");
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next());
    match (key, missing) {
        (".", Some(field)) => format!("key `{field}`: {message}"),
        (_, Some(field)) => format!("key `{key}.{field}`: {message}"),
        (".", None) => format!("TOML syntax error: {message}"),
        _ => format!("key `{key}`: {message}"),
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn secret(
    section: &str,
    env: Option<&str>,
    file: Option<&Path>,
    base: &Path,
    path: &Path,
) -> Result<Secret> {
    match (env, file) {
        (Some(_), Some(_)) => Err(Error::config(format!(
            "{}: key `{section}`: set password_env or password_file, not both",
            path.display()
        ))),
        (Some(var), None) => std::env::var(var).map(Secret).map_err(|_| {
            Error::config(format!(
                "{}: key `{section}.password_env`: environment variable {var} is not set",
                path.display()
            ))
        }),
        (None, Some(f)) => {
            let full = base.join(f);
            std::fs::read_to_string(&full)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| {
                    Error::config(format!(
                        "{}: key `{section}.password_file`: cannot read {}: {e}",
                        path.display(),
                        full.display()
                    ))
                })
        }
        // No password: trust or socket authentication.
        (None, None) => Ok(Secret::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
pipeline = "shop"
mappings = "mappings/bitrix"
source_time_zone = "Asia/Almaty"

[mysql]
host = "127.0.0.1"
user = "duplex"
password_env = "DUPLEX_TEST_NEVER_SET_PW"
database = "bitrix"

[postgres]
host = "127.0.0.1"
user = "duplex"
dbname = "crm"
"#;

    #[test]
    fn unknown_key_names_its_path() {
        let text = GOOD.replace(
            "password_env = \"DUPLEX_TEST_NEVER_SET_PW\"",
            "pasword = \"x\"",
        );
        let e = Config::parse(&text, Path::new("/etc/duplex.toml")).unwrap_err();
        assert!(e.to_string().contains("key `mysql.pasword`"), "{e}");
        assert!(e.to_string().contains("/etc/duplex.toml:9"), "{e}");
    }

    #[test]
    fn ready_bound_must_be_a_usable_duration() {
        for bad in ["0", "-1", "nan", "1e30"] {
            let text = format!("{GOOD}\n[metrics]\nready_max_lag_s = {bad}\n");
            let e = Config::parse(&text, Path::new("d.toml")).unwrap_err();
            assert!(
                e.to_string().contains("metrics.ready_max_lag_s")
                    && e.to_string()
                        .contains("must be a number of seconds above 0"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn verify_interval_is_a_duration_with_a_unit() {
        assert_eq!(
            parse_interval("6h"),
            Some(std::time::Duration::from_secs(21_600))
        );
        assert_eq!(
            parse_interval("90s"),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_interval(" 15m "),
            Some(std::time::Duration::from_secs(900))
        );
        assert_eq!(
            parse_interval("1d"),
            Some(std::time::Duration::from_secs(86_400))
        );
        for bad in ["6", "0h", "h", "6x", "-1h", "6 hours"] {
            assert_eq!(parse_interval(bad), None, "{bad}");
        }
        let text = GOOD.replace("password_env = \"DUPLEX_TEST_NEVER_SET_PW\"", "")
            + "\n[verify]\ninterval = \"6 hours\"\n";
        let e = Config::parse(&text, Path::new("d.toml")).unwrap_err();
        assert!(e.to_string().contains("verify.interval"), "{e}");
        let text = GOOD.replace("password_env = \"DUPLEX_TEST_NEVER_SET_PW\"", "")
            + "\n[verify]\ninterval = \"30m\"\nmax_rows_per_second = 500\n";
        let c = Config::parse(&text, Path::new("d.toml")).unwrap();
        assert_eq!(
            c.verify.interval,
            Some(std::time::Duration::from_secs(1800))
        );
        assert_eq!(c.verify.max_rows_per_second, Some(500));
        assert!(Config::parse(
            &GOOD.replace("password_env = \"DUPLEX_TEST_NEVER_SET_PW\"", ""),
            Path::new("d.toml")
        )
        .unwrap()
        .verify
        .interval
        .is_none());
    }

    #[test]
    fn missing_env_is_named_and_secret_not_printed() {
        let e = Config::parse(GOOD, Path::new("d.toml")).unwrap_err();
        assert!(
            e.to_string()
                .contains("DUPLEX_TEST_NEVER_SET_PW is not set"),
            "{e}"
        );
        let text = GOOD.replace("password_env = \"DUPLEX_TEST_NEVER_SET_PW\"", "");
        let c = Config::parse(&text, Path::new("/x/d.toml")).unwrap();
        assert_eq!(c.mappings, Path::new("/x/mappings/bitrix"));
        assert_eq!(c.source_time_zone, chrono_tz::Asia::Almaty);
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn bad_zone_and_pipeline() {
        let text = GOOD
            .replace("Asia/Almaty", "Mars/Olympus")
            .replace("password_env = \"DUPLEX_TEST_NEVER_SET_PW\"", "");
        let e = Config::parse(&text, Path::new("d.toml")).unwrap_err();
        assert!(e.to_string().contains("key `source_time_zone`"), "{e}");
        let text = GOOD
            .replace("\"shop\"", "\"Shop-1\"")
            .replace("password_env = \"DUPLEX_TEST_NEVER_SET_PW\"", "");
        let e = Config::parse(&text, Path::new("d.toml")).unwrap_err();
        assert!(e.to_string().contains("key `pipeline`"), "{e}");
    }
}
