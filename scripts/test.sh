#!/usr/bin/env bash
# The test command: installs what is missing (MariaDB, PostgreSQL 15), then runs every test.
# The tests start their own private database servers on free ports of 127.0.0.1.
# Benchmarks (`cargo bench --bench throughput`) and the demo are type-checked, not run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo check --locked --benches --examples
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --lib --bins --tests "$@" 2>&1 | tee "$log"
# Streaming both ways, echo and crash safety once more under least-privilege accounts: MySQL
# without SUPER, PostgreSQL without superuser (so echo suppression takes the marker rule).
DUPLEX_TEST_LEAST_PRIVILEGE=1 cargo test --locked \
    --test both --test conflicts --test echo --test echo_random --test crash --test reverse_crash --test stream \
    "$@" 2>&1 | tee -a "$log"
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
