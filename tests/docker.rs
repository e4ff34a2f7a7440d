//! `docker/` as a user meets it, without a container engine: the compose stack's init scripts
//! (`docker/initdb/*`) applied to real MariaDB and PostgreSQL servers in their name order, then
//! `docker/duplex.toml` (pointed at those servers) with the shipped mapping set: `check`
//! passes, `setup` and `run` work, a Bitrix order reaches the CRM and the CRM's status change
//! comes back. Also what compose.yaml and the unit promise: pinned images, MySQL 8.4 LTS.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::harness::{duplex_bin, mysql_rows, pg_rows, terminate};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs one init script with `env`; panics with its output when it fails.
fn init_script(path: &Path, env: &[(&str, String)]) {
    let out = Command::new("sh")
        .arg(path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{} failed:\n{}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The scripts of one initdb directory, in the name order the images run them.
fn scripts(dir: &str) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(repo().join("docker/initdb").join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    all.sort();
    all
}

/// `docker/duplex.toml` with the servers, names and listener of this test.
fn config(
    dir: &Path,
    pipeline: &str,
    dbs: &support::TestDbs,
    my_user: &str,
    pg_role: &str,
) -> PathBuf {
    let s = support::servers();
    let text = std::fs::read_to_string(repo().join("docker/duplex.toml")).unwrap();
    let mut section = String::new();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with('[') {
                section = l.to_string();
            }
            let set = |k: &str, v: String| -> Option<String> {
                l.starts_with(&format!("{k} = "))
                    .then(|| format!("{k} = {v}"))
            };
            let replaced = match section.as_str() {
                "" => set("pipeline", format!("\"{pipeline}\"")).or_else(|| {
                    set(
                        "mappings",
                        format!("\"{}\"", repo().join("mappings/bitrix").display()),
                    )
                }),
                "[mysql]" => set("host", "\"127.0.0.1\"".into())
                    .or_else(|| set("port", s.mysql_port.to_string()))
                    .or_else(|| set("user", format!("\"{my_user}\"")))
                    .or_else(|| set("database", format!("\"{}\"", dbs.mysql_db)))
                    .or_else(|| set("sslmode", "\"prefer\"".into())),
                "[postgres]" => set("host", "\"127.0.0.1\"".into())
                    .or_else(|| set("port", s.pg_port.to_string()))
                    .or_else(|| set("user", format!("\"{pg_role}\"")))
                    .or_else(|| set("dbname", format!("\"{}\"", dbs.pg_db)))
                    .or_else(|| set("duplex_schema", format!("\"duplex_{pipeline}\""))),
                "[metrics]" => set("listen", "\"127.0.0.1:0\"".into()),
                _ => None,
            };
            replaced.unwrap_or_else(|| l.to_string())
        })
        .collect();
    let path = dir.join("duplex.toml");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_init_scripts_and_config_give_duplex_what_the_shipped_set_needs() {
    let dbs = support::fresh_dbs("dockerinit").await;
    let s = support::servers();
    let suffix = &dbs.pg_db[dbs.pg_db.len() - 8..];
    let (my_user, pg_role) = (format!("dk_{suffix}"), format!("dk_{suffix}"));
    let (my_pw, pg_pw) = ("docker-my-pw".to_string(), "docker-pg-pw".to_string());
    let my_env = vec![
        (
            "DUPLEX_INITDB_MYSQL",
            format!(
                "--protocol=tcp -h127.0.0.1 -P{} -u{} -p{}",
                s.mysql_port, s.mysql_user, s.mysql_password
            ),
        ),
        ("MYSQL_DATABASE", dbs.mysql_db.clone()),
        ("DUPLEX_MYSQL_USER", my_user.clone()),
        ("DUPLEX_MYSQL_PASSWORD", my_pw.clone()),
        (
            "DUPLEX_BITRIX_SQL",
            repo()
                .join("examples/shop/bitrix.sql")
                .display()
                .to_string(),
        ),
    ];
    for script in scripts("mysql") {
        init_script(&script, &my_env);
    }
    let pg_env = vec![
        ("PGHOST", "127.0.0.1".to_string()),
        ("PGPORT", s.pg_port.to_string()),
        ("PGPASSWORD", s.pg_password.clone()),
        ("POSTGRES_USER", s.pg_user.clone()),
        ("POSTGRES_DB", dbs.pg_db.clone()),
        ("DUPLEX_PG_ROLE", pg_role.clone()),
        ("DUPLEX_PG_PASSWORD", pg_pw.clone()),
        (
            "DUPLEX_CRM_SQL",
            repo().join("mappings/bitrix/crm.sql").display().to_string(),
        ),
    ];
    for script in scripts("postgres") {
        init_script(&script, &pg_env);
    }
    let dir = tempfile::tempdir().unwrap();
    let pipeline = support::harness::pipeline_name("dockerinit", &dbs);
    let cfg = config(dir.path(), &pipeline, &dbs, &my_user, &pg_role);
    let duplex = |args: &[&str]| {
        let mut c = Command::new(duplex_bin());
        c.args(args)
            .arg("-c")
            .arg(&cfg)
            .env("DUPLEX_MYSQL_PASSWORD", &my_pw)
            .env("DUPLEX_PG_PASSWORD", &pg_pw);
        c
    };
    let run = |args: &[&str]| {
        let out = duplex(args).output().unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = run(&["setup"]);
    assert_eq!(code, Some(0), "setup with the init scripts' grants:\n{out}");
    let (code, out) = run(&["check"]);
    assert_eq!(code, Some(0), "check after setup:\n{out}");
    // A Bitrix order in, the CRM's status back.
    let mut my = dbs.mysql().await;
    support::shop::generate(&mut my, 9, 3, 2).await;
    let log = std::fs::File::create(dir.path().join("duplex.log")).unwrap();
    let mut child = support::harness::Duplex(
        duplex(&["run"])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let pg = dbs.pg().await;
    let log = || std::fs::read_to_string(dir.path().join("duplex.log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while pg_rows(&pg, "SELECT count(*)::text FROM orders").await[0][0].as_deref() != Some("2") {
        assert!(
            std::time::Instant::now() < deadline,
            "the orders never reached the CRM:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pg.batch_execute("UPDATE orders SET status = 'completed' WHERE bitrix_order_id = 1")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while mysql_rows(&mut my, "SELECT STATUS_ID FROM b_sale_order WHERE ID = 1").await
        != vec![vec![Some("F".to_string())]]
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the CRM's status never reached Bitrix:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = terminate(&mut child, Duration::from_secs(40));
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{}", log());
    let (code, out) = run(&["teardown", "--yes"]);
    assert_eq!(code, Some(0), "{out}");
}

/// compose.yaml pins every image, and runs MySQL 8.4 LTS (8.0 is past its end of life).
#[test]
fn the_compose_images_are_pinned() {
    let compose = std::fs::read_to_string(repo().join("docker/compose.yaml")).unwrap();
    let images: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .collect();
    assert!(images.len() >= 4, "{images:?}");
    for i in &images {
        if *i == "duplex:local" {
            continue;
        }
        let tag = i.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            tag.chars().any(|c| c.is_ascii_digit()) && tag.contains('.') && tag != "latest",
            "{i} is not pinned to a version"
        );
    }
    assert!(
        images.iter().any(|i| i.starts_with("mysql:8.4")),
        "{images:?}"
    );
}

/// Runs a checking tool on files of docker/; a tool that is missing fails the test with how to
/// get it (scripts/deps.sh installs both).
fn tool(program: &str, args: &[&str], install: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo().join("docker"))
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed ({e}): {install}, or run scripts/deps.sh"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

/// The alert rules load, and their promtool tests (alerts.test.yml) pass.
#[test]
fn the_alert_rules_load_and_their_tests_pass() {
    let install = "apt-get install -y prometheus";
    let checked = tool("promtool", &["check", "rules", "alerts.yml"], install);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = tool("promtool", &["test", "rules", "alerts.test.yml"], install);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// compose.yaml follows the Compose specification; the dashboard is JSON whose queries name
/// metrics duplex exports.
#[test]
fn the_compose_file_and_the_dashboard_are_valid() {
    let out = tool(
        "check-jsonschema",
        &["--builtin-schema", "vendor.compose-spec", "compose.yaml"],
        "python3 -m pip install check-jsonschema",
    );
    assert!(out.contains("ok"), "{out}");
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docker/grafana/dashboards/duplex.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let text = dash.to_string();
    let exported = std::fs::read_to_string(repo().join("src/telemetry/mod.rs")).unwrap();
    let mut named = 0;
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(base) = word.strip_prefix("duplex_") {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(base, |b, s| b.strip_suffix(s).unwrap_or(b));
            assert!(
                exported.contains(&format!("\"duplex_{base}\"")),
                "the dashboard queries duplex_{base}, which duplex does not export"
            );
            named += 1;
        }
    }
    assert!(named > 10, "{named} metric names in the dashboard");
}
