//! Drives the `duplex` binary in tests: writes a config and a mapping set for a test's databases,
//! runs `duplex setup`, starts and kills `duplex run`, waits for conditions, and compares tables
//! across both servers row by row.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use super::{servers, TestDbs};

/// Environment variables the test configs read the passwords from.
pub const MYSQL_PW_ENV: &str = "DUPLEX_TEST_MYSQL_PASSWORD";
pub const PG_PW_ENV: &str = "DUPLEX_TEST_PG_PASSWORD";

/// Path of the binary under test: cargo's for tests and benches; for the demo (an example,
/// which cargo gives no such variable) `DUPLEX_BIN` or the `duplex` next to `target/*/examples/`.
pub fn duplex_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_duplex") {
        return PathBuf::from(p);
    }
    if let Ok(p) = std::env::var("DUPLEX_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the current executable");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/examples");
    dir.join("duplex")
}

/// A test's working directory: config, mappings and logs.
pub struct Workdir {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// Under [`least_privilege`]: the test's PostgreSQL database, whose tables duplex's role
    /// takes over in [`Workdir::setup`].
    least_pg_db: Option<String>,
}

/// `DUPLEX_TEST_LEAST_PRIVILEGE=1`: every [`Workdir`] runs duplex under accounts of its own
/// instead of the servers' superuser. MySQL: REPLICATION SLAVE and BINLOG MONITOR, SELECT,
/// INSERT, UPDATE and DELETE on the test's database, everything on duplex's own database, and
/// nothing else (no SUPER). PostgreSQL: LOGIN and REPLICATION, CREATE on the test's database
/// (for duplex's schema), and ownership of the test's tables in `public` (a publication needs
/// it), handed over by [`Workdir::setup`]; not superuser, so the replication-origin functions
/// are not executable and echo suppression takes the marker rule. `scripts/test.sh` runs the
/// streaming, echo and crash tests once more this way.
pub fn least_privilege() -> bool {
    std::env::var("DUPLEX_TEST_LEAST_PRIVILEGE").is_ok_and(|v| v == "1")
}

/// Runs `work` to completion on a runtime of its own, on a thread of its own: for the
/// synchronous `Workdir` methods, which async tests call.
fn on_own_runtime<F>(work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(work)
    })
    .join()
    .expect("a support thread");
}

/// Creates the least-privilege accounts for `dbs` (the same name on both servers, the test
/// password) and returns the name.
fn least_privilege_accounts(dbs: &TestDbs) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "lp_{}_{}",
        &dbs.pg_db[dbs.pg_db.len() - 8..],
        N.fetch_add(1, Ordering::Relaxed)
    );
    let (my_db, pg_db, user) = (dbs.mysql_db.clone(), dbs.pg_db.clone(), name.clone());
    on_own_runtime(async move {
        let pw = super::DB_PASSWORD;
        let mut my = super::mysql_conn(None).await;
        my.query_drop(format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{pw}';
                 GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%';
                 GRANT SELECT, INSERT, UPDATE, DELETE ON `{my_db}`.* TO '{user}'@'%';
                 GRANT ALL PRIVILEGES ON `duplex`.* TO '{user}'@'%'"
        ))
        .await
        .expect("create the least-privilege MySQL account");
        let pg = super::pg_client(&pg_db).await;
        pg.batch_execute(&format!(
            "CREATE ROLE {user} LOGIN REPLICATION PASSWORD '{pw}';
                 GRANT CREATE ON DATABASE {pg_db} TO {user}"
        ))
        .await
        .expect("create the least-privilege PostgreSQL role");
    });
    name
}

impl Workdir {
    /// Writes `duplex.toml` for `dbs` and the mapping files given as (file name, text).
    pub fn new(dbs: &TestDbs, pipeline: &str, tz: &str, mappings: &[(&str, &str)]) -> Workdir {
        Self::with_metrics(dbs, pipeline, tz, mappings, "127.0.0.1:0")
    }

    /// Like [`Workdir::new`], with the metrics listener on `metrics`.
    pub fn with_metrics(
        dbs: &TestDbs,
        pipeline: &str,
        tz: &str,
        mappings: &[(&str, &str)],
        metrics: &str,
    ) -> Workdir {
        let s = servers();
        let dir = tempfile::tempdir().expect("create a temporary work dir");
        let mdir = dir.path().join("mappings");
        std::fs::create_dir_all(&mdir).expect("create the mapping dir");
        for (name, text) in mappings {
            std::fs::write(mdir.join(name), text).expect("write a mapping file");
        }
        let config = dir.path().join("duplex.toml");
        let least = least_privilege().then(|| least_privilege_accounts(dbs));
        let (mu, pu) = match &least {
            Some(user) => (user.clone(), user.clone()),
            None => (s.mysql_user.clone(), s.pg_user.clone()),
        };
        let text = format!(
            r#"pipeline = "{pipeline}"
mappings = "mappings"
source_time_zone = "{tz}"

[mysql]
host = "127.0.0.1"
port = {mp}
user = "{mu}"
password_env = "{MYSQL_PW_ENV}"
database = "{mdb}"
server_id = {sid}

[postgres]
host = "127.0.0.1"
port = {pp}
user = "{pu}"
password_env = "{PG_PW_ENV}"
dbname = "{pdb}"

[metrics]
listen = "{metrics}"
"#,
            mp = s.mysql_port,
            mdb = dbs.mysql_db,
            sid = super::next_server_id(),
            pp = s.pg_port,
            pdb = dbs.pg_db,
        );
        std::fs::write(&config, text).expect("write duplex.toml");
        Workdir {
            dir,
            config,
            least_pg_db: least.map(|_| dbs.pg_db.clone()),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A second pipeline on the same two databases and accounts: this config with another
    /// pipeline name, binlog server id and mapping set.
    pub fn sibling(&self, pipeline: &str, mappings: &[(&str, &str)]) -> Workdir {
        let dir = tempfile::tempdir().expect("create a temporary work dir");
        let mdir = dir.path().join("mappings");
        std::fs::create_dir_all(&mdir).expect("create the mapping dir");
        for (name, text) in mappings {
            std::fs::write(mdir.join(name), text).expect("write a mapping file");
        }
        let text = std::fs::read_to_string(&self.config).expect("read duplex.toml");
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("pipeline = ") {
                    format!("pipeline = \"{pipeline}\"")
                } else if l.starts_with("server_id = ") {
                    format!("server_id = {}", super::next_server_id())
                } else {
                    l.to_string()
                }
            })
            .collect();
        let config = dir.path().join("duplex.toml");
        std::fs::write(&config, lines.join("\n") + "\n").expect("write duplex.toml");
        Workdir {
            dir,
            config,
            least_pg_db: self.least_pg_db.clone(),
        }
    }

    /// Makes duplex log in to `section` (`mysql` or `postgres`) as `user` with the password in
    /// `password_file` (relative to the work dir), whatever login the config had.
    pub fn set_login(&self, section: &str, user: &str, password_file: &str) {
        let text = std::fs::read_to_string(&self.config).expect("read duplex.toml");
        let header = format!("[{section}]");
        let mut inside = false;
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with('[') {
                    inside = l == header;
                }
                if inside && l.starts_with("user = ") {
                    format!("user = \"{user}\"")
                } else if inside
                    && (l.starts_with("password_env = ") || l.starts_with("password_file = "))
                {
                    format!("password_file = \"{password_file}\"")
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(&self.config, lines.join("\n") + "\n").expect("write duplex.toml");
    }

    /// Appends TOML (a `[section]` of settings) to the config.
    pub fn append_config(&self, text: &str) {
        let mut config = std::fs::read_to_string(&self.config).expect("read duplex.toml");
        config.push('\n');
        config.push_str(text);
        std::fs::write(&self.config, config).expect("write duplex.toml");
    }

    /// duplex with `args`, this work dir's configuration and the servers' passwords.
    pub fn command(&self, args: &[&str]) -> Command {
        let s = servers();
        let mut c = Command::new(duplex_bin());
        c.args(args)
            .arg("-c")
            .arg(&self.config)
            .env(MYSQL_PW_ENV, &s.mysql_password)
            .env(PG_PW_ENV, &s.pg_password)
            .env(
                "RUST_LOG",
                std::env::var("DUPLEX_TEST_LOG").unwrap_or_else(|_| "info".into()),
            );
        c
    }

    /// Runs a duplex command on a pseudo-terminal (`script`), as an operator at a terminal
    /// would: its success and what the terminal showed.
    pub fn run_on_terminal(&self, args: &[&str]) -> (bool, String) {
        let duplex = self.command(args);
        let line: Vec<String> = std::iter::once(duplex.get_program())
            .chain(duplex.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
            .collect();
        let mut script = Command::new("script");
        script.args(["-qec", &line.join(" "), "/dev/null"]);
        for (k, v) in duplex.get_envs() {
            if let Some(v) = v {
                script.env(k, v);
            }
        }
        let out = script
            .output()
            .expect("run script(1) (util-linux's bsdutils: apt-get install -y bsdutils)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Runs a one-shot command (`setup`, `check`), returning (success, stdout + stderr).
    pub fn run_cmd(&self, args: &[&str]) -> (bool, String) {
        let out = self.command(args).output().expect("run duplex");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Runs a duplex command to its end: its exit code, standard output and standard error.
    pub fn run_split(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = self.command(args).output().expect("run duplex");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn setup(&self) {
        if let Some(pg_db) = &self.least_pg_db {
            // The tables exist by now: duplex's PostgreSQL role (the least-privilege one, or
            // whichever a test logs in as) takes them over.
            let text = std::fs::read_to_string(&self.config).expect("read duplex.toml");
            let section = &text[text.find("[postgres]").expect("[postgres]")..];
            let user = section
                .lines()
                .find_map(|l| l.strip_prefix("user = \""))
                .and_then(|l| l.strip_suffix('"'))
                .expect("the PostgreSQL user")
                .to_string();
            let pg_db = pg_db.clone();
            on_own_runtime(async move {
                let pg = super::pg_client(&pg_db).await;
                pg.batch_execute(&format!(
                    "DO $$ DECLARE t record; BEGIN
                           FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
                             EXECUTE format('ALTER TABLE public.%I OWNER TO {user}', t.tablename);
                           END LOOP;
                         END $$"
                ))
                .await
                .expect("hand the test's tables to the least-privilege role");
            });
        }
        let (ok, out) = self.run_cmd(&["setup"]);
        assert!(ok, "duplex setup failed:\n{out}");
    }

    /// Starts `duplex run` with its log in the work dir (appending across restarts). The process
    /// is killed when the handle is dropped, so a failing test leaves nothing running.
    pub fn start(&self) -> Duplex {
        self.start_cmd(&["run"])
    }

    /// Starts any duplex command in the background, logging like [`Workdir::start`].
    pub fn start_cmd(&self, args: &[&str]) -> Duplex {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("duplex.log"))
            .expect("open the duplex log");
        Duplex(
            self.command(args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start duplex run"),
        )
    }

    /// Like [`Workdir::start_cmd`], with these environment variables set too.
    pub fn start_env(&self, args: &[&str], env: &[(&str, &str)]) -> Duplex {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("duplex.log"))
            .expect("open the duplex log");
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        Duplex(
            c.stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start duplex"),
        )
    }

    /// Like [`Workdir::start_cmd`], with standard output written to `stdout`.
    pub fn start_cmd_to(&self, args: &[&str], stdout: &Path) -> Duplex {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("duplex.log"))
            .expect("open the duplex log");
        let out = std::fs::File::create(stdout).expect("create the output file");
        Duplex(
            self.command(args)
                .stdout(out)
                .stderr(log)
                .spawn()
                .expect("start duplex"),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("duplex.log")).unwrap_or_default()
    }

    /// Copies the whole duplex log out of the work dir (which a failing test removes) to
    /// `target/test-logs/<name>.log`, for a failure message to point at; returns the path.
    pub fn keep_log(&self, name: &str) -> PathBuf {
        let dir = duplex_bin()
            .parent()
            .and_then(|d| d.parent())
            .map(|t| t.join("test-logs"))
            .unwrap_or_else(std::env::temp_dir);
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{name}.log"));
        let _ = std::fs::write(&path, self.log());
        path
    }
}

/// A running `duplex run`; killed on drop.
pub struct Duplex(pub Child);

impl Duplex {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Duplex {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// duplex's PostgreSQL settings for database `db` of the test server (as a library user).
pub fn pg_config(db: &str) -> duplex::config::PostgresConfig {
    let s = servers();
    duplex::config::PostgresConfig {
        host: "127.0.0.1".into(),
        port: s.pg_port,
        user: s.pg_user.clone(),
        password: duplex::config::Secret::new(s.pg_password.clone()),
        dbname: db.into(),
        schema: "public".into(),
        duplex_schema: "duplex".into(),
        connect_timeout_s: 10,
        read_timeout_s: 15,
        skip_all_origins: false,
        tls: duplex::tls::Tls::disabled(),
    }
}

/// Runs `duplex verify --json` (plus `args`): its exit code and report.
pub fn verify(work: &Workdir, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = work.run_split(&all);
    let report = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("verify printed no report ({e}):\n{out}\n{err}"));
    (code.expect("verify exited"), report)
}

/// A count summed over a verify report's entries.
pub fn total(report: &serde_json::Value, field: &str) -> u64 {
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[field].as_u64().unwrap_or(0))
        .sum()
}

/// A free TCP port on 127.0.0.1 (for a metrics listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A pipeline name unique to a test's databases (`prefix` + the end of the database name):
/// pipelines name server-wide objects (slots, publications, origins).
pub fn pipeline_name(prefix: &str, dbs: &TestDbs) -> String {
    format!("{prefix}{}", &dbs.pg_db[dbs.pg_db.len() - 8..])
}

/// GET `path` from a running duplex's listener on `port`: (status code, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((code, body.to_string()))
}

/// The value of one series in a Prometheus text body: `name` with every one of `labels`.
pub fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split(['{', ' ']).next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A counter of `duplex_transactions_applied_total` for one direction, read from a running
/// duplex's metrics listener on `port`.
pub fn transactions_applied(port: u16, direction: &str) -> u64 {
    let (_, body) = http_get(port, "/metrics").expect("metrics listener");
    metric(
        &body,
        "duplex_transactions_applied_total",
        &[("direction", direction)],
    )
    .map(|v| v as u64)
    .unwrap_or_else(|| panic!("no transactions metric for {direction}:\n{body}"))
}

/// Sends SIGKILL and reaps.
pub fn kill9(child: &mut Duplex) {
    let _ = child.0.kill();
    let _ = child.0.wait();
}

/// Sends SIGTERM and waits for the exit status (SIGKILL after `within`).
pub fn terminate(child: &mut Duplex, within: Duration) -> Option<std::process::ExitStatus> {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Ok(Some(st)) = child.0.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill9(child);
    None
}

/// SIGTERM, and asserts duplex exits 0 (it finishes the transaction in flight first).
pub fn stop_cleanly(child: &mut Duplex, work: &Workdir) {
    let status = terminate(child, Duration::from_secs(40));
    assert!(
        status.is_some_and(|s| s.success()),
        "duplex did not exit 0 on SIGTERM: {status:?}\n{}",
        work.log()
    );
}

/// Kills duplex with SIGKILL at random moments (`every` ms apart, seeded) and restarts it, until
/// `done` is set and at least 5 kills happened (at most 200). Returns the running duplex and the
/// number of kills.
pub async fn kill_at_random_until(
    work: &Workdir,
    done: &std::sync::atomic::AtomicBool,
    seed: u64,
    every: std::ops::Range<u64>,
) -> (Duplex, usize) {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut kills = 0;
    let mut child = work.start();
    while !done.load(std::sync::atomic::Ordering::Relaxed) || kills < 5 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(every.clone()))).await;
        kill9(&mut child);
        kills += 1;
        child = work.start();
        if kills > 200 {
            break;
        }
    }
    (child, kills)
}

/// Polls `f` until it returns true or `timeout` passes; panics with `what` and the log on timeout.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, work: &Workdir, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        if Instant::now() > until {
            let log = work.log();
            let tail: String = log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!("timed out after {timeout:?} waiting for {what}; duplex log tail:\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rows of a MySQL query rendered as text (NULL as None).
pub async fn mysql_rows(conn: &mut mysql_async::Conn, sql: &str) -> Vec<Vec<Option<String>>> {
    let rows: Vec<mysql_async::Row> = conn
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.as_ref(i) {
                    Some(mysql_async::Value::NULL) | None => None,
                    Some(mysql_async::Value::Bytes(b)) => {
                        Some(String::from_utf8_lossy(b).into_owned())
                    }
                    Some(mysql_async::Value::Int(v)) => Some(v.to_string()),
                    Some(mysql_async::Value::UInt(v)) => Some(v.to_string()),
                    Some(other) => Some(other.as_sql(true)),
                })
                .collect()
        })
        .collect()
}

/// Rows of a PostgreSQL query; every selected expression must be cast to text.
pub async fn pg_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let rows = client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        })
        .collect()
}

/// Count of rows in a PostgreSQL table (0 when it cannot be read yet).
pub async fn pg_count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// How many times duplex stopped with an error holding `said` (its "duplex stopped" log lines).
pub fn stops(work: &Workdir, said: &str) -> usize {
    work.log()
        .lines()
        .filter(|l| l.contains("duplex stopped") && l.contains(said))
        .count()
}

/// After a stop whose log line holds `said`: duplex (`child`) is killed, a restart stops at the
/// same place again, and `table` is resynced (`duplex snapshot --table`), the documented way
/// past such a stop.
pub async fn restart_stops_again_then_resync(
    work: &Workdir,
    mut child: Duplex,
    said: &str,
    table: &str,
) {
    kill9(&mut child);
    let before = stops(work, said);
    assert!(before > 0, "no stop on {said:?} yet:\n{}", work.log());
    let mut child = work.start();
    wait_for(
        Duration::from_secs(30),
        "the stop again after a restart",
        work,
        || async { stops(work, said) > before },
    )
    .await;
    kill9(&mut child);
    let (ok, out) = work.run_cmd(&["snapshot", "--table", table]);
    assert!(ok, "{out}");
}

/// The mapping of [`one_mapped_table`]: `t` to `t`, every column.
pub const T_ALL: &str = "[[table]]\nsource = \"t\"\ntarget = \"t\"\ncolumns = \"all\"\n";

/// Fresh databases with table `t` on both sides (`mysql_ddl` / `pg_ddl`: whatever each side
/// creates, `t` among it), mapped MySQL → PostgreSQL with `columns = "all"`, and `duplex setup`
/// run: the start of the tests of one mapped table.
pub async fn one_mapped_table(prefix: &str, mysql_ddl: &str, pg_ddl: &str) -> (TestDbs, Workdir) {
    let dbs = super::fresh_dbs(prefix).await;
    dbs.mysql().await.query_drop(mysql_ddl).await.unwrap();
    dbs.pg().await.batch_execute(pg_ddl).await.unwrap();
    let work = Workdir::new(
        &dbs,
        &pipeline_name(prefix, &dbs),
        "UTC",
        &[("t.toml", T_ALL)],
    );
    work.setup();
    (dbs, work)
}
