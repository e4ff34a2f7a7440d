//! Test support: one private MariaDB and one private PostgreSQL 15 per test process.
//!
//! Owns starting, configuring and cleaning up the throwaway database servers that the
//! integration tests (`tests/*.rs`, via `mod support;`) and the bench harness
//! (`benches/throughput.rs`, via `#[path = "../tests/support/mod.rs"] mod support;`) run
//! against, plus the helpers to connect to them and to carve out per-test databases.
//!
//! * [`servers`] starts both servers on first use (thread-safe, once per process) under
//!   `/tmp/duplex-test-<pid>/`, on free ports of 127.0.0.1, and returns the same
//!   [`Servers`] afterwards. Missing binaries are a panic that says how to install them;
//!   nothing is ever skipped.
//! * [`mysql_conn`], [`pg_client`], [`fresh_dbs`] and [`TestDbs`] give connections and
//!   uniquely named databases, so tests running in parallel never share data.
//! * [`next_server_id`] hands out process-unique replica `server_id`s.
//! * [`stop_mysql`], [`start_mysql`], [`stop_postgres`] and [`start_postgres`] stop a
//!   server (cleanly or as a crash) and bring it back on the same port with the same data
//!   directory and settings; tests that use them hold [`exclusive`], since every test of a
//!   binary shares the two servers. [`proxy::Proxy`] puts a switchable TCP proxy (pass,
//!   blackhole, reset) in front of either.
//!
//! Cleanup: the test harness has no global teardown, so the servers are spawned by a
//! "keeper" thread that never exits, with `PR_SET_PDEATHSIG` set in the child: when the
//! test process exits, the keeper thread dies with it and the kernel signals the servers:
//! SIGKILL for mariadbd (a SIGTERM that lands while it is still starting up can hang it for
//! good, and its data is thrown away anyway), SIGINT = fast shutdown for postgres (whose
//! SIGTERM "smart" shutdown would wait for clients, and whose SIGKILL would leak shared
//! memory). Directories of dead test processes are swept at the start of the next
//! [`servers`] call, killing whatever still runs from them. The keeper thread also does
//! every later stop and start (it waits on a request channel whose sender lives in a static,
//! which is as good as parking forever), so a restarted server is its child too and keeps
//! the parent-death signal.
//!
//! When running as root (as CI does), both servers run as `nobody`: `initdb` and
//! `postgres` refuse to run as root, and running mariadbd as the same user keeps it
//! simple. They are spawned with that uid directly rather than via `mariadbd --user`,
//! because a process that changes its own uid loses its parent-death signal.
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use rand::RngExt;

/// User name for both servers.
pub const DB_USER: &str = "duplex";
/// Password of [`DB_USER`] on both servers.
pub const DB_PASSWORD: &str = "duplex-test-pw";

const MARIADBD: &str = "/usr/sbin/mariadbd";
const MARIADB_INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const MARIADB_MESSAGES: &str = "/usr/share/mysql";
const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const MARIADB_HINT: &str =
    "run `apt-get install -y mariadb-server` (or `bash scripts/test.sh`, which installs it)";
const PG_HINT: &str =
    "run `apt-get install -y postgresql-15` (or `bash scripts/test.sh`, which installs it)";

/// Where the per-process directories live; deliberately not `$TMPDIR`, which the
/// unprivileged server user may not be able to traverse.
const TMP_ROOT: &str = "/tmp";
const DIR_PREFIX: &str = "duplex-test-";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const PORT_ATTEMPTS: usize = 5;
/// How long a stopping server may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before trying a restarted server's fixed port again after it found it taken.
const FIXED_PORT_RETRY: Duration = Duration::from_secs(1);
const UNPRIVILEGED_USER: &str = "nobody";

/// The two private servers of this test process.
#[derive(Debug)]
pub struct Servers {
    pub mysql_port: u16,
    pub pg_port: u16,
    pub mysql_user: String,
    pub mysql_password: String,
    pub pg_user: String,
    pub pg_password: String,
    /// The per-process directory, `/tmp/duplex-test-<pid>`.
    pub root: PathBuf,
    /// MariaDB's directory: `data/`, `tmp/`, binlogs, socket, pid file and error log.
    pub mysql_dir: PathBuf,
    /// MariaDB's unix socket (only the `duplex@localhost` account logs in through it).
    pub mysql_socket: PathBuf,
    /// MariaDB's error log, worth reading when a test fails oddly.
    pub mysql_log: PathBuf,
    /// PostgreSQL's directory: `data/`, the unix socket and the log.
    pub pg_dir: PathBuf,
    /// PostgreSQL's server log (its stderr).
    pub pg_log: PathBuf,
    /// Test certificates (see [`write_certificates`]): `ca.pem` signed both servers'
    /// `server.pem` (for the name `localhost` only, not `127.0.0.1`) and the client
    /// certificate `client.pem` / `client.key`; `other-ca.pem` signed nothing.
    pub tls_dir: PathBuf,
}

impl Servers {
    /// `mysql://duplex:…@127.0.0.1:<port>/<db>`.
    pub fn mysql_url(&self, db: &str) -> String {
        format!(
            "mysql://{}:{}@127.0.0.1:{}/{db}",
            self.mysql_user, self.mysql_password, self.mysql_port
        )
    }

    /// `postgres://duplex:…@127.0.0.1:<port>/<db>`.
    pub fn pg_url(&self, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{db}",
            self.pg_user, self.pg_password, self.pg_port
        )
    }
}

/// The servers of this process, started on the first call. Panics (in every caller) with
/// the reason if they could not be started.
/// `DUPLEX_SERVERS_DURABLE=1` (the demo): the servers run as production would — every commit
/// flushed (`fsync`, `synchronous_commit`, `innodb_flush_log_at_trx_commit=1`, `sync_binlog=1`)
/// — so the lag a newcomer reads is duplex's, not a server's deferred flush. The tests and the
/// bench trade that durability for speed.
fn durable() -> bool {
    std::env::var("DUPLEX_SERVERS_DURABLE").is_ok_and(|v| v == "1")
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

pub fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Result<Servers, String>> = OnceLock::new();
    match SERVERS.get_or_init(start_servers) {
        Ok(servers) => servers,
        Err(why) => panic!("test database servers unavailable: {why}"),
    }
}

/// Connection options for the `duplex` user over TCP, optionally with a default database.
pub fn mysql_opts(db: Option<&str>) -> mysql_async::Opts {
    let s = servers();
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(s.mysql_port)
        .user(Some(s.mysql_user.clone()))
        .pass(Some(s.mysql_password.clone()))
        .db_name(db)
        .prefer_socket(false)
        .into()
}

/// A TCP connection to the private MariaDB as the `duplex` user.
pub async fn mysql_conn(db: Option<&str>) -> mysql_async::Conn {
    let opts = mysql_opts(db);
    mysql_async::Conn::new(opts).await.unwrap_or_else(|e| {
        panic!(
            "cannot connect to the test MariaDB on 127.0.0.1:{} (db {db:?}): {e}; see {}",
            servers().mysql_port,
            servers().mysql_log.display()
        )
    })
}

/// Connection settings for the `duplex` user over TCP to database `db`; handy for
/// replication connections (`replication_mode`) or other tweaks.
pub fn pg_config(db: &str) -> tokio_postgres::Config {
    pg_config_on_port(db, servers().pg_port)
}

/// [`pg_config`] for another port of 127.0.0.1, such as a [`proxy::Proxy`]'s (a
/// `Config`'s `port` adds a port rather than replacing it).
pub fn pg_config_on_port(db: &str, port: u16) -> tokio_postgres::Config {
    let s = servers();
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(&s.pg_user)
        .password(&s.pg_password)
        .dbname(db)
        .connect_timeout(PROBE_TIMEOUT);
    config
}

/// A client for database `db` of the private PostgreSQL as the `duplex` user; its
/// connection task is spawned on the current tokio runtime.
pub async fn pg_client(db: &str) -> tokio_postgres::Client {
    let (client, connection) = pg_config(db)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to the test PostgreSQL on 127.0.0.1:{} (db {db:?}): {e}; see {}",
                servers().pg_port,
                servers().pg_log.display()
            )
        });
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("test PostgreSQL connection ended with an error: {e}");
        }
    });
    client
}

/// A pair of freshly created, uniquely named databases, one per server.
#[derive(Debug, Clone)]
pub struct TestDbs {
    pub mysql_db: String,
    pub pg_db: String,
}

impl TestDbs {
    /// A connection to [`TestDbs::mysql_db`].
    pub async fn mysql(&self) -> mysql_async::Conn {
        mysql_conn(Some(&self.mysql_db)).await
    }

    /// A client for [`TestDbs::pg_db`].
    pub async fn pg(&self) -> tokio_postgres::Client {
        pg_client(&self.pg_db).await
    }
}

/// Creates a MariaDB database (`CHARACTER SET utf8mb3`, the 1C-Bitrix default) and a
/// PostgreSQL database, both named `<prefix>_<counter>_<random>` (lowercase, at most 50
/// characters), unique within and across test processes.
pub async fn fresh_dbs(prefix: &str) -> TestDbs {
    let name = unique_db_name(prefix);

    let mut mysql = mysql_conn(None).await;
    mysql
        .query_drop(format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb3"))
        .await
        .unwrap_or_else(|e| panic!("cannot create MariaDB database {name}: {e}"));
    mysql
        .disconnect()
        .await
        .unwrap_or_else(|e| panic!("cannot disconnect from the test MariaDB: {e}"));

    let pg = pg_client("postgres").await;
    pg.batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("cannot create PostgreSQL database {name}: {e}"));

    TestDbs {
        mysql_db: name.clone(),
        pg_db: name,
    }
}

/// A replica `server_id` unique within this process (and, through a pid-based offset,
/// very likely across processes), never the servers' own id 1.
pub fn next_server_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let base = 1000 + (std::process::id() % 1_000_000) * 1000;
    base.wrapping_add(n)
}

/// How [`stop_mysql`] and [`stop_postgres`] stop a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// An orderly shutdown: SIGTERM for MariaDB, SIGINT (fast shutdown: disconnect the
    /// clients, write a checkpoint) for PostgreSQL.
    Clean,
    /// A crash that needs recovery at the next start: SIGKILL for MariaDB (InnoDB and
    /// binlog crash recovery follow); SIGQUIT for PostgreSQL, its immediate shutdown: the
    /// postmaster stops its children at once without a checkpoint, so the next start runs
    /// WAL crash recovery. SIGQUIT rather than SIGKILL because a killed postmaster would
    /// leave its backends running and its shared memory allocated.
    ///
    /// What survives: everything MariaDB committed (its redo log and binlog are written to
    /// the OS at each commit, and only the process dies), but not every PostgreSQL commit:
    /// the test PostgreSQL runs with `synchronous_commit=off`, so commits of the last
    /// ~0.6 s (3 × `wal_writer_delay`) that still sat in its WAL buffers are lost, though
    /// the client was told they succeeded. A session that needs its commits to survive
    /// sets `synchronous_commit = on` (cheap here: `fsync=off` stays).
    Crash,
}

/// Stops the private MariaDB and waits until the process is gone (at most a minute, then
/// it is killed and this panics). A no-op when it is not running.
///
/// Like the other three stop/start functions it is synchronous: the keeper thread does the
/// work while the calling thread blocks on its reply. It never touches the caller's tokio
/// runtime, so it may be called straight from a `#[tokio::test]`; use `spawn_blocking`
/// when other tasks on a current-thread runtime (a [`proxy::Proxy`], say) must keep
/// running meanwhile. Hold [`exclusive`] around its use.
pub fn stop_mysql(how: Stop) {
    ask_keeper(Order::Stop(Db::MariaDb, how));
}

/// Starts the private MariaDB again on the same port, with the same data directory and
/// settings, and returns once it accepts the test account's logins (up to a minute,
/// longer after a crash with much to recover). A no-op when it is running.
pub fn start_mysql() {
    ask_keeper(Order::Start(Db::MariaDb));
}

/// Stops the private PostgreSQL (see [`Stop`]) and waits until the postmaster is gone; as
/// [`stop_mysql`] otherwise.
pub fn stop_postgres(how: Stop) {
    ask_keeper(Order::Stop(Db::Postgres, how));
}

/// Starts the private PostgreSQL again on the same port, with the same data directory and
/// settings; as [`start_mysql`] otherwise.
pub fn start_postgres() {
    ask_keeper(Order::Start(Db::Postgres));
}

/// Serialises the tests of one binary that stop servers against every other test of that
/// binary that uses them (all share the two servers). Hold the guard for the whole test:
/// `let _serial = support::exclusive();` (not `let _ = …`, which drops it at once).
/// Poison-tolerant: a test that panicked while holding it does not fail the rest.
///
/// Held across `.await` in a `#[tokio::test]` it trips clippy's `await_holding_lock`,
/// which is harmless here (each test has its own runtime, and the waiters are other
/// tests' threads): `#[allow(clippy::await_holding_lock)]` on such tests.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static EXCLUSIVE: Mutex<()> = Mutex::new(());
    EXCLUSIVE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unique_db_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random: u32 = rand::rng().random();
    let suffix = format!("_{n}_{random:08x}");

    let mut stem: String = prefix
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !stem.starts_with(|c: char| c.is_ascii_lowercase()) {
        stem.insert_str(0, "t_");
    }
    stem.truncate(50 - suffix.len());
    stem + &suffix
}

// ---------------------------------------------------------------------------------------
// Starting the servers.

/// Who the server processes run as: `None` means as ourselves.
type RunAs = Option<(u32, u32)>;

struct Layout {
    root: PathBuf,
    mysql_dir: PathBuf,
    mysql_data: PathBuf,
    mysql_socket: PathBuf,
    mysql_log: PathBuf,
    pg_dir: PathBuf,
    pg_data: PathBuf,
    pg_log: PathBuf,
    tls_dir: PathBuf,
}

impl Layout {
    fn new(root: PathBuf) -> Self {
        let mysql_dir = root.join("mysql");
        let pg_dir = root.join("pg");
        Layout {
            mysql_data: mysql_dir.join("data"),
            mysql_socket: mysql_dir.join("mysqld.sock"),
            mysql_log: mysql_dir.join("mysqld.err"),
            pg_data: pg_dir.join("data"),
            pg_log: pg_dir.join("postgres.log"),
            tls_dir: root.join("tls"),
            mysql_dir,
            pg_dir,
            root,
        }
    }
}

fn start_servers() -> Result<Servers, String> {
    sweep_stale_dirs();
    let (tx, rx) = mpsc::channel();
    let (requests, incoming) = mpsc::channel::<Request>();
    // `start_servers` runs once per process (under `servers`' OnceLock), so this is the
    // only `set`.
    let _ = KEEPER.set(requests);
    std::thread::Builder::new()
        .name("duplex-test-db-keeper".into())
        .spawn(move || {
            // The servers' parent-death signal fires when *this thread* exits, so it must
            // live as long as the process, and it spawns every server, restarts included.
            let mut keeper = None;
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| launch(&mut keeper)))
                    .unwrap_or_else(|panic| Err(format!("setup panicked: {}", panic_text(&panic))));
            // The receiver only goes away if the caller is gone, and then nobody cares.
            let _ = tx.send(result);
            // The sender lives in a static, so this loop never ends.
            for request in incoming {
                let outcome = match keeper.as_mut() {
                    Some(keeper) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        keeper.carry_out(request.order)
                    }))
                    .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&panic)))),
                    None => Err("the servers never started".to_string()),
                };
                let _ = request.reply.send(outcome);
            }
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("cannot spawn the keeper thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the keeper thread died before reporting".to_string())?
}

/// The keeper thread's request channel.
static KEEPER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();

struct Request {
    order: Order,
    reply: mpsc::Sender<Result<(), String>>,
}

#[derive(Debug, Clone, Copy)]
enum Order {
    Stop(Db, Stop),
    Start(Db),
}

#[derive(Debug, Clone, Copy)]
enum Db {
    MariaDb,
    Postgres,
}

/// Has the keeper thread carry out `order` and waits for it; panics with the reason if
/// it failed.
fn ask_keeper(order: Order) {
    servers();
    let keeper = KEEPER
        .get()
        .expect("servers() has started the keeper thread");
    let (reply, outcome) = mpsc::channel();
    keeper
        .send(Request { order, reply })
        .unwrap_or_else(|_| panic!("{order:?}: the keeper thread is gone"));
    match outcome.recv() {
        Ok(Ok(())) => {}
        Ok(Err(why)) => panic!("{order:?} failed: {why}"),
        Err(_) => panic!("{order:?}: the keeper thread dropped the request"),
    }
}

/// The keeper thread's state: what it needs to start a server again, and the servers it
/// runs (`None` while stopped).
struct Keeper {
    layout: Layout,
    run_as: RunAs,
    /// Drives the readiness probes; current-thread, so the servers are this thread's
    /// children.
    runtime: tokio::runtime::Runtime,
    mysql: Option<Child>,
    mysql_port: u16,
    pg: Option<Child>,
    pg_port: u16,
}

impl Keeper {
    fn carry_out(&mut self, order: Order) -> Result<(), String> {
        match order {
            Order::Stop(Db::MariaDb, how) => {
                let signal = match how {
                    Stop::Clean => libc::SIGTERM,
                    Stop::Crash => libc::SIGKILL,
                };
                stop_child(&mut self.mysql, "MariaDB", signal)
            }
            Order::Stop(Db::Postgres, how) => {
                let signal = match how {
                    Stop::Clean => libc::SIGINT,
                    Stop::Crash => libc::SIGQUIT,
                };
                stop_child(&mut self.pg, "PostgreSQL", signal)
            }
            Order::Start(Db::MariaDb) => {
                if running(&mut self.mysql)? {
                    return Ok(());
                }
                let (child, _) = self.runtime.block_on(boot_mariadb(
                    &self.layout,
                    self.run_as,
                    Some(self.mysql_port),
                ))?;
                self.mysql = Some(child);
                Ok(())
            }
            Order::Start(Db::Postgres) => {
                if running(&mut self.pg)? {
                    return Ok(());
                }
                let (child, _) = self.runtime.block_on(boot_postgres(
                    &self.layout,
                    self.run_as,
                    Some(self.pg_port),
                ))?;
                self.pg = Some(child);
                Ok(())
            }
        }
    }
}

/// Whether the server in `slot` still runs; one that exited on its own is reaped.
fn running(slot: &mut Option<Child>) -> Result<bool, String> {
    let Some(child) = slot else {
        return Ok(false);
    };
    match child.try_wait() {
        Ok(None) => Ok(true),
        Ok(Some(_)) => {
            *slot = None;
            Ok(false)
        }
        Err(e) => Err(format!("cannot poll server process {}: {e}", child.id())),
    }
}

/// Sends `signal` to the server in `slot` and waits until it has exited; after
/// [`STOP_TIMEOUT`] it is killed and that is an error.
fn stop_child(slot: &mut Option<Child>, what: &str, signal: i32) -> Result<(), String> {
    if !running(slot)? {
        return Ok(());
    }
    let Some(mut child) = slot.take() else {
        return Ok(());
    };
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain kill(2) on our own child, which is not reaped yet, so the pid is ours.
    unsafe { libc::kill(pid, signal) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for {what} (pid {pid}): {e}")),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{what} (pid {pid}) did not exit within {}s of signal {signal}; killed it",
                STOP_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".to_string()
    }
}

/// Runs on the keeper thread: prepares both data directories, starts both servers and
/// waits until they serve. The keeper state goes into `slot` as soon as it exists, so
/// that servers started before a failure stay owned by the keeper thread.
fn launch(slot: &mut Option<Keeper>) -> Result<Servers, String> {
    check_binaries()?;
    let run_as = unprivileged_identity()?;
    let layout =
        Layout::new(Path::new(TMP_ROOT).join(format!("{DIR_PREFIX}{}", std::process::id())));
    prepare_dirs(&layout, run_as)?;

    let (mysql_init, pg_init) = std::thread::scope(|scope| {
        let mysql = scope.spawn(|| install_mariadb(&layout, run_as));
        let pg = scope.spawn(|| init_postgres(&layout, run_as));
        (
            mysql
                .join()
                .unwrap_or_else(|p| Err(format!("MariaDB init panicked: {}", panic_text(&p)))),
            pg.join()
                .unwrap_or_else(|p| Err(format!("initdb panicked: {}", panic_text(&p)))),
        )
    });
    mysql_init?;
    pg_init?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a tokio runtime for server setup: {e}"))?;
    let keeper = slot.insert(Keeper {
        layout,
        run_as,
        runtime,
        mysql: None,
        mysql_port: 0,
        pg: None,
        pg_port: 0,
    });
    // `block_on` polls both futures on this (the keeper) thread, so the servers are its
    // children.
    let (mysql, pg) = keeper.runtime.block_on(async {
        tokio::join!(
            boot_mariadb(&keeper.layout, run_as, None),
            boot_postgres(&keeper.layout, run_as, None)
        )
    });
    let mut errors = Vec::new();
    match mysql {
        Ok((child, port)) => {
            keeper.mysql = Some(child);
            keeper.mysql_port = port;
        }
        Err(e) => errors.push(e),
    }
    match pg {
        Ok((child, port)) => {
            keeper.pg = Some(child);
            keeper.pg_port = port;
        }
        Err(e) => errors.push(e),
    }
    if !errors.is_empty() {
        return Err(errors.join("\n\n"));
    }

    let layout = &keeper.layout;
    Ok(Servers {
        mysql_port: keeper.mysql_port,
        pg_port: keeper.pg_port,
        mysql_user: DB_USER.to_string(),
        mysql_password: DB_PASSWORD.to_string(),
        pg_user: DB_USER.to_string(),
        pg_password: DB_PASSWORD.to_string(),
        root: layout.root.clone(),
        mysql_dir: layout.mysql_dir.clone(),
        mysql_socket: layout.mysql_socket.clone(),
        mysql_log: layout.mysql_log.clone(),
        pg_dir: layout.pg_dir.clone(),
        pg_log: layout.pg_log.clone(),
        tls_dir: layout.tls_dir.clone(),
    })
}

fn check_binaries() -> Result<(), String> {
    for bin in [MARIADBD, MARIADB_INSTALL_DB] {
        if !Path::new(bin).exists() {
            let name = Path::new(bin)
                .file_name()
                .map_or(bin.into(), |n| n.to_string_lossy());
            return Err(format!("{name} not found at {bin}: {MARIADB_HINT}"));
        }
    }
    for bin in ["initdb", "postgres"] {
        let path = Path::new(PG_BIN_DIR).join(bin);
        if !path.exists() {
            return Err(format!(
                "PostgreSQL 15 {bin} not found at {}: {PG_HINT}",
                path.display()
            ));
        }
    }
    Ok(())
}

/// `Some((uid, gid))` of `nobody` when we are root, else `None` (run as ourselves).
fn unprivileged_identity() -> Result<RunAs, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new(UNPRIVILEGED_USER).expect("user name has no NUL byte");
    // SAFETY: getpwnam gets a valid C string; the returned record is read at once, and
    // only from the keeper thread during setup.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(format!(
            "running as root, but user `{UNPRIVILEGED_USER}` (needed to run initdb, postgres \
             and mariadbd unprivileged) does not exist"
        ));
    }
    // SAFETY: non-null pointer to a passwd record just returned by getpwnam.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some((uid, gid)))
}

fn prepare_dirs(layout: &Layout, run_as: RunAs) -> Result<(), String> {
    if layout.root.exists() {
        // A directory named after our own pid is left over from an earlier process.
        fs::remove_dir_all(&layout.root)
            .map_err(|e| format!("cannot remove stale {}: {e}", layout.root.display()))?;
    }
    let private_dirs = [
        &layout.mysql_dir,
        &layout.mysql_data,
        &layout.mysql_dir.join("tmp"),
        &layout.pg_dir,
    ];
    for dir in std::iter::once(&layout.root).chain(private_dirs) {
        fs::create_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    fs::set_permissions(&layout.root, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot chmod {}: {e}", layout.root.display()))?;
    write_certificates(&layout.tls_dir, run_as)?;
    let pwfile = layout.pg_dir.join("pwfile");
    fs::write(&pwfile, DB_PASSWORD)
        .map_err(|e| format!("cannot write {}: {e}", pwfile.display()))?;
    if let Some((uid, gid)) = run_as {
        for path in private_dirs.into_iter().chain([&pwfile]) {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| format!("cannot chown {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Writes a test CA, a server certificate it signed for the name `localhost` (not for
/// `127.0.0.1`, so that connecting by address fails `verify-full`), the server key (owned by
/// the servers' user, mode 0600, as PostgreSQL demands), and a second CA that signed nothing.
fn write_certificates(dir: &Path, run_as: RunAs) -> Result<(), String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let fail = |e: rcgen::Error| format!("test certificates: {e}");
    let ca = |name: &str| -> Result<(rcgen::Certificate, KeyPair), String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().map_err(fail)?;
        Ok((params.self_signed(&key).map_err(fail)?, key))
    };
    let (ca_cert, ca_key) = ca("duplex test CA")?;
    let (other_ca, _) = ca("duplex untrusted CA")?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(fail)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_key = KeyPair::generate().map_err(fail)?;
    let server = params
        .signed_by(&server_key, &ca_cert, &ca_key)
        .map_err(fail)?;
    // A client certificate from the same CA, for accounts that demand one (REQUIRE X509).
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "duplex test client");
    let client_key = KeyPair::generate().map_err(fail)?;
    let client = params
        .signed_by(&client_key, &ca_cert, &ca_key)
        .map_err(fail)?;
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, text) in [
        ("client.pem", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ] {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    for (name, text, mode) in [
        ("ca.pem", ca_cert.pem(), 0o644),
        ("other-ca.pem", other_ca.pem(), 0o644),
        ("server.pem", server.pem(), 0o644),
        ("server.key", server_key.serialize_pem(), 0o600),
    ] {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(|e| format!("cannot chown {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// A command that runs as `run_as`, in `dir`, with `HOME=dir`, no stdin, and that gets
/// `signal` when the spawning thread exits.
fn server_command(program: impl AsRef<Path>, dir: &Path, run_as: RunAs, signal: i32) -> Command {
    let mut cmd = Command::new(program.as_ref());
    cmd.current_dir(dir).env("HOME", dir).stdin(Stdio::null());
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only makes async-signal-safe system calls and does not
    // allocate. It runs after std's setuid/setgid, so the setting survives them.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    // Keep a terminal's Ctrl-C away from the servers: they go when the test process goes.
    cmd.process_group(0);
    cmd
}

fn run_to_completion(mut cmd: Command, what: &str) -> Result<(), String> {
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

fn install_mariadb(layout: &Layout, run_as: RunAs) -> Result<(), String> {
    let mut cmd = server_command(MARIADB_INSTALL_DB, &layout.mysql_dir, run_as, libc::SIGKILL);
    // No `--user`: the script already runs as the unprivileged user.
    cmd.arg("--no-defaults")
        .arg("--basedir=/usr")
        .arg(format!("--datadir={}", layout.mysql_data.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .arg("--skip-name-resolve")
        .arg(format!(
            "--tmpdir={}",
            layout.mysql_dir.join("tmp").display()
        ));
    run_to_completion(cmd, "mariadb-install-db")
}

fn init_postgres(layout: &Layout, run_as: RunAs) -> Result<(), String> {
    let attempt = |locale: &str| {
        let mut cmd = server_command(
            Path::new(PG_BIN_DIR).join("initdb"),
            &layout.pg_dir,
            run_as,
            libc::SIGKILL,
        );
        cmd.arg("-D")
            .arg(&layout.pg_data)
            .args(["-U", DB_USER])
            .arg(format!(
                "--pwfile={}",
                layout.pg_dir.join("pwfile").display()
            ))
            .args(["-A", "scram-sha-256", "-E", "UTF8", "--no-sync", locale]);
        run_to_completion(cmd, "initdb")
    };
    match attempt("--locale=C.UTF-8") {
        Err(e) if e.contains("locale") => {
            // initdb removes the data directory it created when it fails.
            let _ = fs::remove_dir_all(&layout.pg_data);
            attempt("--no-locale").map_err(|e2| format!("{e}\n\nretry with --no-locale: {e2}"))
        }
        other => other,
    }
}

/// Starts mariadbd on `fixed_port`, or on a free port (another one each time the port
/// turns out to be taken), and waits until it serves.
async fn boot_mariadb(
    layout: &Layout,
    run_as: RunAs,
    fixed_port: Option<u16>,
) -> Result<(Child, u16), String> {
    let out_log = layout.mysql_dir.join("mysqld.out");
    for _ in 0..PORT_ATTEMPTS {
        let port = pick_port(fixed_port)?;
        let offset = file_len(&layout.mysql_log);
        let out = append_file(&out_log)?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot dup {}: {e}", out_log.display()))?;
        // SIGKILL: the data is disposable, and a mariadbd that gets SIGTERM while still
        // starting up can hang forever instead of shutting down.
        let mut cmd = server_command(MARIADBD, &layout.mysql_dir, run_as, libc::SIGKILL);
        // `--no-defaults` must come first; nothing from /etc/mysql is read.
        cmd.arg("--no-defaults")
            .arg("--basedir=/usr")
            .arg(format!("--lc-messages-dir={MARIADB_MESSAGES}"))
            .arg(format!("--datadir={}", layout.mysql_data.display()))
            .arg(format!(
                "--tmpdir={}",
                layout.mysql_dir.join("tmp").display()
            ))
            .arg(format!("--socket={}", layout.mysql_socket.display()))
            .arg(format!(
                "--pid-file={}",
                layout.mysql_dir.join("mysqld.pid").display()
            ))
            .arg(format!("--log-error={}", layout.mysql_log.display()))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--ssl-ca={}",
                layout.tls_dir.join("ca.pem").display()
            ))
            .arg(format!(
                "--ssl-cert={}",
                layout.tls_dir.join("server.pem").display()
            ))
            .arg(format!(
                "--ssl-key={}",
                layout.tls_dir.join("server.key").display()
            ))
            .arg(format!("--port={port}"))
            .arg("--skip-name-resolve")
            .arg(format!(
                "--log-bin={}",
                layout.mysql_dir.join("binlog").display()
            ))
            .arg("--server-id=1")
            .arg("--binlog-format=ROW")
            .arg("--binlog-row-image=FULL")
            .arg("--binlog-row-metadata=FULL")
            .arg("--log-slave-updates")
            .arg("--sql-mode=")
            .arg("--innodb-buffer-pool-size=256M")
            .arg(if durable() {
                "--innodb-flush-log-at-trx-commit=1"
            } else {
                "--innodb-flush-log-at-trx-commit=2"
            })
            .arg(if durable() {
                "--sync-binlog=1"
            } else {
                "--sync-binlog=0"
            })
            .arg("--max-connections=500")
            .stdout(out)
            .stderr(err);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {MARIADBD}: {e}"))?;
        let data_dir = layout.mysql_data.clone();
        let ready = wait_ready(
            &mut child,
            "MariaDB",
            port,
            &layout.mysql_log,
            offset,
            || mariadb_setup(port, &data_dir),
        )
        .await;
        match ready {
            Ok(()) => return Ok((child, port)),
            Err(Startup::PortTaken) => port_taken_pause(fixed_port).await,
            Err(Startup::Failed(why)) => return Err(why),
        }
    }
    Err(ports_taken("MariaDB", fixed_port))
}

/// Starts postgres on `fixed_port`, or on a free port (another one each time the port
/// turns out to be taken), and waits until it serves.
async fn boot_postgres(
    layout: &Layout,
    run_as: RunAs,
    fixed_port: Option<u16>,
) -> Result<(Child, u16), String> {
    for _ in 0..PORT_ATTEMPTS {
        let port = pick_port(fixed_port)?;
        let offset = file_len(&layout.pg_log);
        let out = append_file(&layout.pg_log)?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot dup {}: {e}", layout.pg_log.display()))?;
        // SIGINT is a fast shutdown; SIGTERM's smart shutdown would wait for clients.
        let mut cmd = server_command(
            Path::new(PG_BIN_DIR).join("postgres"),
            &layout.pg_dir,
            run_as,
            libc::SIGINT,
        );
        cmd.arg("-D")
            .arg(&layout.pg_data)
            .arg("-p")
            .arg(port.to_string());
        for setting in [
            "listen_addresses=127.0.0.1".to_string(),
            format!("unix_socket_directories={}", layout.pg_dir.display()),
            "wal_level=logical".into(),
            "max_replication_slots=50".into(),
            "max_wal_senders=50".into(),
            format!("fsync={}", on_off(durable())),
            format!("synchronous_commit={}", on_off(durable())),
            format!("full_page_writes={}", on_off(durable())),
            "max_connections=300".into(),
            "shared_buffers=256MB".into(),
            "logging_collector=off".into(),
            "ssl=on".into(),
            format!(
                "ssl_cert_file={}",
                layout.tls_dir.join("server.pem").display()
            ),
            format!(
                "ssl_key_file={}",
                layout.tls_dir.join("server.key").display()
            ),
        ] {
            cmd.arg("-c").arg(setting);
        }
        cmd.stdout(out).stderr(err);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {PG_BIN_DIR}/postgres: {e}"))?;
        let data_dir = layout.pg_data.clone();
        let ready = wait_ready(
            &mut child,
            "PostgreSQL",
            port,
            &layout.pg_log,
            offset,
            || postgres_probe(port, &data_dir),
        )
        .await;
        match ready {
            Ok(()) => return Ok((child, port)),
            Err(Startup::PortTaken) => port_taken_pause(fixed_port).await,
            Err(Startup::Failed(why)) => return Err(why),
        }
    }
    Err(ports_taken("PostgreSQL", fixed_port))
}

fn pick_port(fixed_port: Option<u16>) -> Result<u16, String> {
    match fixed_port {
        Some(port) => Ok(port),
        None => free_port(),
    }
}

/// A fixed port may be held for a moment longer (by a client that got it as its
/// ephemeral port, say), so it is retried after a pause; a free port is simply replaced.
async fn port_taken_pause(fixed_port: Option<u16>) {
    if fixed_port.is_some() {
        tokio::time::sleep(FIXED_PORT_RETRY).await;
    }
}

fn ports_taken(what: &str, fixed_port: Option<u16>) -> String {
    match fixed_port {
        Some(port) => format!(
            "{what}: port {port} stayed taken by another process for {PORT_ATTEMPTS} tries, \
             so the server cannot come back on it"
        ),
        None => format!(
            "{what}: every one of {PORT_ATTEMPTS} free ports was taken before it could bind"
        ),
    }
}

enum Startup {
    /// The server could not bind its port: try another one.
    PortTaken,
    Failed(String),
}

/// Polls `probe` until it succeeds, the server exits, or [`STARTUP_TIMEOUT`] passes.
/// `log` is the server's log, read from `offset` to explain failures.
async fn wait_ready<F, Fut>(
    child: &mut Child,
    what: &str,
    port: u16,
    log: &Path,
    offset: u64,
    mut probe: F,
) -> Result<(), Startup>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let text = read_from(log, offset);
                if text.contains("Address already in use") {
                    return Err(Startup::PortTaken);
                }
                return Err(Startup::Failed(format!(
                    "{what} exited ({status}) while starting on 127.0.0.1:{port}; {}:\n{}",
                    log.display(),
                    tail(&text, 40)
                )));
            }
            Ok(None) => {}
            Err(e) => {
                return Err(Startup::Failed(format!(
                    "cannot poll the {what} process: {e}"
                )))
            }
        }
        let last_error = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
        };
        if Instant::now() >= deadline {
            let _ = child.kill();
            return Err(Startup::Failed(format!(
                "{what} did not accept connections on 127.0.0.1:{port} within {}s (last \
                 error: {last_error}); {}:\n{}",
                STARTUP_TIMEOUT.as_secs(),
                log.display(),
                tail(&read_from(log, offset), 40)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs in as root (passwordless on 127.0.0.1 after `--auth-root-authentication-method=
/// normal`), checks that this is our server, and creates the `duplex` accounts unless they
/// exist: on a restart it changes nothing, so it writes nothing to the binlog that a CDC
/// reader under test would see.
async fn mariadb_setup(port: u16, data_dir: &Path) -> Result<(), String> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| format!("root login: {e}"))?;
    ensure_own_server(&mut conn, data_dir).await?;
    for host in ["%", "localhost"] {
        let account = format!("'{DB_USER}'@'{host}'");
        let exists: Option<u8> = conn
            .exec_first(
                "SELECT 1 FROM mysql.user WHERE User = ? AND Host = ? AND Grant_priv = 'Y'",
                (DB_USER, host),
            )
            .await
            .map_err(|e| format!("look up {account}: {e}"))?;
        if exists.is_some() {
            continue;
        }
        conn.query_drop(format!(
            "CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{DB_PASSWORD}'"
        ))
        .await
        .map_err(|e| format!("CREATE USER {account}: {e}"))?;
        conn.query_drop(format!(
            "GRANT ALL PRIVILEGES ON *.* TO {account} WITH GRANT OPTION"
        ))
        .await
        .map_err(|e| format!("GRANT to {account}: {e}"))?;
    }
    conn.disconnect()
        .await
        .map_err(|e| format!("root disconnect: {e}"))?;

    // Check the account the tests use, the way they use it.
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(DB_USER))
        .pass(Some(DB_PASSWORD))
        .prefer_socket(false);
    let conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| format!("login as {DB_USER} after creating it: {e}"))?;
    conn.disconnect()
        .await
        .map_err(|e| format!("{DB_USER} disconnect: {e}"))
}

/// Guards against a port race in which another server answers on "our" port.
async fn ensure_own_server(conn: &mut mysql_async::Conn, data_dir: &Path) -> Result<(), String> {
    let served: Option<String> = conn
        .query_first("SELECT @@datadir")
        .await
        .map_err(|e| format!("SELECT @@datadir: {e}"))?;
    let served = served.unwrap_or_default();
    if Path::new(served.trim_end_matches('/')) != data_dir {
        return Err(format!(
            "the server on this port serves {served}, not {}",
            data_dir.display()
        ));
    }
    Ok(())
}

async fn postgres_probe(port: u16, data_dir: &Path) -> Result<(), String> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(DB_USER)
        .password(DB_PASSWORD)
        .dbname("postgres")
        .connect_timeout(PROBE_TIMEOUT)
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("login as {DB_USER}: {e}"))?;
    let connection = tokio::spawn(connection);
    let row = client
        .query_one("SHOW data_directory", &[])
        .await
        .map_err(|e| format!("SHOW data_directory: {e}"))?;
    let served: String = row.get(0);
    drop(client);
    let _ = connection.await;
    if Path::new(&served) != data_dir {
        return Err(format!(
            "the server on this port serves {served}, not {}",
            data_dir.display()
        ));
    }
    Ok(())
}

/// A port that was free on 127.0.0.1 a moment ago and was not handed out before by this
/// process. The caller retries with another one if the server cannot bind it.
///
/// Ports come from below the kernel's ephemeral range when it leaves room: a port inside
/// it can become some client's source port while its server is stopped, and the server
/// could not come back on it.
fn free_port() -> Result<u16, String> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let below_ephemeral = ephemeral_port_floor().filter(|&low| low >= LOWEST_PORT + 1000);
    let mut rng = rand::rng();
    for _ in 0..100 {
        let candidate = below_ephemeral.map_or(0, |low| rng.random_range(LOWEST_PORT..low));
        let listener = match TcpListener::bind(("127.0.0.1", candidate)) {
            Ok(listener) => listener,
            Err(_) if candidate != 0 => continue,
            Err(e) => return Err(format!("cannot bind 127.0.0.1:0 to find a free port: {e}")),
        };
        let port = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?
            .port();
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err("no new free port on 127.0.0.1 after 100 tries".into())
}

/// The lowest port [`free_port`] picks below the ephemeral range.
const LOWEST_PORT: u16 = 10_000;

/// The first port of the kernel's ephemeral (client source port) range.
fn ephemeral_port_floor() -> Option<u16> {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn append_file(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    let read = File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.read_to_end(&mut text)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&text).into_owned(),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// Sweeping up after dead test processes.

/// Removes `/tmp/duplex-test-<pid>` directories whose process is gone (or that carry our
/// own pid, hence are from an earlier process), after stopping any server still running
/// from them. Best effort: problems are reported on stderr, never fatal.
fn sweep_stale_dirs() {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir(TMP_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != me && process_alive(pid) {
            continue;
        }
        let dir = entry.path();
        stop_processes_under(&dir);
        if let Err(e) = fs::remove_dir_all(&dir) {
            eprintln!(
                "duplex test support: cannot remove stale {}: {e}",
                dir.display()
            );
        }
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Stops every process whose working directory lies under `dir` (servers chdir into
/// their data directory) or whose command line names a path in it (this also covers the
/// pids in `mysqld.pid` / `postmaster.pid`): postgres with SIGQUIT (immediate shutdown,
/// which releases its shared memory), others (mariadbd, which may hang on SIGTERM) with
/// SIGKILL, and whatever is left after 10 s with SIGKILL.
fn stop_processes_under(dir: &Path) {
    let victims = processes_under(dir);
    if victims.is_empty() {
        return;
    }
    for &pid in &victims {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let signal = if comm.trim() == "postgres" {
            libc::SIGQUIT
        } else {
            libc::SIGKILL
        };
        // SAFETY: plain kill(2) on a pid we just found.
        unsafe { libc::kill(pid, signal) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if processes_under(dir).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for pid in processes_under(dir) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    std::thread::sleep(Duration::from_millis(500));
}

fn processes_under(dir: &Path) -> Vec<libc::pid_t> {
    let me = std::process::id();
    let needle = format!("{}/", dir.display()).into_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let cwd_inside = fs::read_link(format!("/proc/{pid}/cwd"))
                .map(|cwd| cwd.starts_with(dir))
                .unwrap_or(false);
            let named = fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| {
                    cmdline
                        .windows(needle.len())
                        .any(|w| w == needle.as_slice())
                })
                .unwrap_or(false);
            cwd_inside || named
        })
        .filter_map(|pid| libc::pid_t::try_from(pid).ok())
        .collect()
}

pub mod harness;
pub mod proxy;
pub mod shop;
