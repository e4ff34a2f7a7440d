//! Records the commit duplex is built from (`duplex --version`, the `duplex_build_info` metric):
//! `git rev-parse` in a checkout, else `$DUPLEX_COMMIT` (a container build without `.git`
//! passes it as a build argument), else "unknown".

fn main() {
    println!("cargo:rerun-if-env-changed=DUPLEX_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    // The branch's ref moves with each commit; HEAD itself only when switching branches.
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=.git/{r}");
            println!("cargo:rerun-if-changed=.git/packed-refs");
        }
    }
    let from_git = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty());
    let commit = std::env::var("DUPLEX_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or(from_git)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DUPLEX_BUILD_COMMIT={commit}");
}
