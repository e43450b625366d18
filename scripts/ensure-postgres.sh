#!/usr/bin/env bash
# Prints a Postgres URL the tests may create databases on.
#
# Uses GATEHOUSE_TEST_POSTGRES_URL if set, else the local server on 5432 if it
# accepts the postgres user without a password; otherwise starts a private
# throwaway cluster (trust auth, its own port and directory), installing
# Postgres first if needed. It never reconfigures a server it did not start.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

can_connect() {
  command -v psql >/dev/null && PGCONNECT_TIMEOUT=3 psql "$1" -qtAc 'SELECT 1' >/dev/null 2>&1
}

if [ -n "${GATEHOUSE_TEST_POSTGRES_URL:-}" ]; then
  echo "$GATEHOUSE_TEST_POSTGRES_URL"; exit 0
fi
local_url="postgres://postgres@127.0.0.1:5432/postgres"
if can_connect "$local_url"; then echo "$local_url"; exit 0; fi
# The machine's own cluster may just be stopped.
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >/dev/null 2>&1 || true
  if can_connect "$local_url"; then echo "$local_url"; exit 0; fi
fi

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }
if [ -z "$(bin_dir)" ] && ! command -v initdb >/dev/null; then
  apt_install postgresql postgresql-client >&2
fi
pg_bin="$(bin_dir)"; pg_bin="${pg_bin:-$(dirname "$(command -v initdb)")}"
data="${GATEHOUSE_PG_DIR:-/tmp/gatehouse-pg}"
port="${GATEHOUSE_PG_PORT:-55432}"
url="postgres://postgres@127.0.0.1:$port/postgres"
if can_connect "$url"; then echo "$url"; exit 0; fi
log "starting a private Postgres on 127.0.0.1:$port ($data)"
run_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ ! -f "$data/PG_VERSION" ]; then
  mkdir -p "$data"; [ "$(id -u)" -eq 0 ] && chown postgres: "$data"
  run_pg "$pg_bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
fi
run_pg "$pg_bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
  -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
can_connect "$url" || { log "Postgres did not start; see $data/server.log"; exit 1; }
echo "$url"
