#!/usr/bin/env bash
# The demo: installs what is missing, builds duplex, starts private MariaDB and PostgreSQL
# servers, and replicates a Bitrix-shaped orders table live while it writes orders.
# DEMO_SECONDS=<n> sets how long it writes (default 120); Ctrl-C stops early.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --locked --release --bin duplex --example demo
exec target/release/examples/demo
