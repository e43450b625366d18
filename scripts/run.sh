#!/usr/bin/env bash
# Runs the gateway locally with the embedded defaults: the control plane on
# SQLite (.gatehouse/), ext-authz, ratelimit-service (in-memory counters),
# the broker (in memory), Envoy from the project venv, and a demo upstream.
# Loads a public and an API-key-protected demo route (limited to 5 requests
# a minute per consumer) and a demo topic, prints curl lines, and stops
# everything cleanly on Ctrl-C.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ADMIN="127.0.0.1:8001"
PROXY_PORT=8000
DEMO_PORT="${GATEHOUSE_DEMO_PORT:-9000}"
DATA_DIR="${GATEHOUSE_DATA_DIR:-$ROOT/.gatehouse}"

ensure_rust
ensure_envoy
command -v curl >/dev/null || apt_install curl
log "building"
cargo build --quiet --bin gatehouse-control-plane --bin gatehouse-ext-authz --bin gatehouse-ratelimit \
  --bin gatehouse-broker --bin gatehousectl
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
mkdir -p "$DATA_DIR"

pids=()
cleanup() {
  log "stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
# Ctrl-C exits the script; leaving it (however) stops everything once.
trap cleanup EXIT
trap 'exit 130' INT TERM

"$target_dir/debug/gatehouse-control-plane" --data-dir "$DATA_DIR" \
  --proxy-addr "0.0.0.0:$PROXY_PORT" --access-log "$DATA_DIR/access.log" \
  --validate-with-envoy "$GATEHOUSE_ENVOY" &
pids+=($!)

wait_for() { # url what
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || { log "a process stopped while waiting for $2 (see $DATA_DIR)"; exit 1; }
    done
    sleep 0.2
  done
  log "$2 did not come up"; exit 1
}
# Ready: the store is prepared (writes succeed) and a snapshot is built.
wait_for "http://$ADMIN/readyz" "control plane"

# xDS needs a token: GATEHOUSE_XDS_TOKEN if set, else the one the control
# plane generated into the data directory (written before it serves).
if [ -z "${GATEHOUSE_XDS_TOKEN:-}" ]; then
  GATEHOUSE_XDS_TOKEN="$(cat "$DATA_DIR/xds-token")"
fi
export GATEHOUSE_XDS_TOKEN
(umask 077; python3 -c 'import os,sys; sys.stdout.write(open(sys.argv[1]).read().replace(
  "${GATEHOUSE_XDS_TOKEN}", os.environ["GATEHOUSE_XDS_TOKEN"]))' \
  "$ROOT/envoy/bootstrap.yaml" > "$DATA_DIR/envoy.yaml")

"$target_dir/debug/gatehouse-ext-authz" &
pids+=($!)
"$target_dir/debug/gatehouse-ratelimit" &
pids+=($!)
"$target_dir/debug/gatehouse-broker" &
pids+=($!)
python3 "$ROOT/scripts/demo_upstream.py" "$DEMO_PORT" &
pids+=($!)
"$GATEHOUSE_ENVOY" -c "$DATA_DIR/envoy.yaml" --disable-hot-restart \
  --log-level warn --log-path "$DATA_DIR/envoy.log" &
pids+=($!)

curl -fsS -X PUT "http://$ADMIN/v1/services/demo" \
  -d "{\"endpoints\": [{\"host\": \"127.0.0.1\", \"port\": $DEMO_PORT}]}" >/dev/null
curl -fsS -X PUT "http://$ADMIN/v1/routes/demo" \
  -d '{"match": {"path_prefix": "/demo"}, "destination": {"service": "demo"}, "strip_prefix": true}' >/dev/null
curl -fsS -X PUT "http://$ADMIN/v1/routes/private" \
  -d '{"match": {"path_prefix": "/private"}, "destination": {"service": "demo"}, "auth": {"method": "api_key"}}' >/dev/null
curl -fsS -X PUT "http://$ADMIN/v1/consumers/demo" -d '{"plan": "free"}' >/dev/null
curl -fsS -X PUT "http://$ADMIN/v1/rate-limit-policies/demo" \
  -d '{"limit": {"requests": 5, "per": "minute"}, "by": ["consumer"], "routes": ["private"]}' >/dev/null
# The broker: subscribe over a WebSocket route, publish through an API-key
# route; the demo topic is open to any authenticated consumer.
curl -fsS -X PUT "http://$ADMIN/v1/services/broker" \
  -d '{"endpoints": [{"host": "127.0.0.1", "port": 18003}]}' >/dev/null
curl -fsS -X PUT "http://$ADMIN/v1/routes/realtime" \
  -d '{"match": {"path_prefix": "/v1/ws"}, "destination": {"service": "broker"}, "websocket": {}, "auth": {"method": "api_key"}}' >/dev/null
curl -fsS -X PUT "http://$ADMIN/v1/routes/publish" \
  -d '{"match": {"path_prefix": "/v1/topics/", "methods": ["POST"]}, "destination": {"service": "broker"}, "auth": {"method": "api_key"}}' >/dev/null
curl -fsS -X PUT "http://$ADMIN/v1/topics/demo" -d '{"retain": 10}' >/dev/null
DEMO_KEY="$(curl -fsS -X POST "http://$ADMIN/v1/consumers/demo/keys" -d '{}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
wait_for "http://127.0.0.1:9901/ready" "Envoy"
wait_for "http://127.0.0.1:$PROXY_PORT/demo/" "the demo route"
wait_for "http://127.0.0.1:18003/readyz" "the broker"

if [ -n "${GATEHOUSE_OTLP_ENDPOINT:-}" ]; then
  TRACES="to $GATEHOUSE_OTLP_ENDPOINT (OTLP/gRPC), ${GATEHOUSE_TRACE_SAMPLING_PERCENT:-1} % of requests and every sampled traceparent"
else
  TRACES="off: GATEHOUSE_OTLP_ENDPOINT=host:4317 scripts/run.sh sends them to a collector"
fi

cat <<MSG

Gatehouse is running (Ctrl-C stops it):
  proxy      http://127.0.0.1:$PROXY_PORT      (Envoy; admin on http://127.0.0.1:9901)
  ext-authz  127.0.0.1:18001            (metrics on http://127.0.0.1:18001/metrics)
  ratelimit  127.0.0.1:18002            (metrics on http://127.0.0.1:18002/metrics)
  broker     127.0.0.1:18003            (metrics on http://127.0.0.1:18003/metrics)
  admin API  http://$ADMIN/v1/routes
  data       $DATA_DIR (SQLite, xDS token, access log, Envoy log)

Observability:
  metrics    http://$ADMIN/metrics, http://127.0.0.1:18001/metrics, http://127.0.0.1:18002/metrics,
             http://127.0.0.1:18003/metrics, http://127.0.0.1:9901/stats/prometheus (Envoy);
             rules and dashboard: deploy/prometheus, deploy/grafana
  logs       $DATA_DIR/access.log (Envoy, one JSON object per request, written every 10 s);
             the services log here (auth failures and rate-limit hits: target gatehouse::events)
  traces     $TRACES
  usage      per route and consumer, within seconds: curl http://$ADMIN/v1/usage?by=total
             (or $target_dir/debug/gatehousectl --server http://$ADMIN usage)

Try:
  curl -i http://127.0.0.1:$PROXY_PORT/demo/hello
  curl -i http://127.0.0.1:$PROXY_PORT/private            # 401: needs an API key
  curl -i -H 'x-api-key: $DEMO_KEY' http://127.0.0.1:$PROXY_PORT/private   # 5 a minute, then 429

Real time (topic "demo"): subscribe from a browser console,
  new WebSocket('ws://127.0.0.1:$PROXY_PORT/v1/ws?topic=demo&api_key=$DEMO_KEY').onmessage = e => console.log(e.data)
then publish:
  curl -i -H 'x-api-key: $DEMO_KEY' -H 'content-type: application/json' -d '{"hello": "world"}' http://127.0.0.1:$PROXY_PORT/v1/topics/demo/messages

MSG
wait -n "${pids[@]}"
