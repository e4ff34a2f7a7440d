#!/usr/bin/env bash
# Installs what duplex's demo and tests need on a fresh Debian machine, if it is missing:
# MariaDB server (mariadbd, mariadb-install-db), PostgreSQL 15 server binaries, and a Rust
# toolchain check. Idempotent; run as root (or with sudo available).
set -euo pipefail

need=()
[ -x /usr/sbin/mariadbd ] && [ -x /usr/bin/mariadb-install-db ] || need+=(mariadb-server mariadb-client)
[ -x /usr/lib/postgresql/15/bin/initdb ] && [ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
# promtool (Debian's prometheus package): the tests check docker/alerts.yml and run its tests.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # Package scripts try to start the services; the tests start their own private servers.
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# check-jsonschema (PyPI), whose built-in Compose specification the tests check
# docker/compose.yaml against.
if ! command -v check-jsonschema >/dev/null 2>&1; then
  echo "installing: check-jsonschema"
  python3 -m pip install --quiet 'check-jsonschema==0.39.0'
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi
