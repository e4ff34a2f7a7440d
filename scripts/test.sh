#!/usr/bin/env bash
# The test command: installs what is missing (MariaDB, PostgreSQL 15), then runs every test.
# The tests start their own private database servers on free ports of 127.0.0.1.
# (Benchmarks are not run here — `cargo bench --bench throughput` — only type-checked.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo check --locked --benches
cargo test --locked --lib --bins --tests --examples "$@"
