#!/usr/bin/env bash
# Run the whole ReconLayer Edge stack locally, on the embedded default: SQLite files under
# .stack/data, the in-process cache, no Redis, no Clerk account (AUTH_DEV_BYPASS=1).
#
#   ./deploy/local/stack.sh            build, start, print the URLs; Ctrl-C stops everything
#
# Ports (override with the variables): gateway 8080, keys-service 8081, audit-service 8082,
# health-service 8083, webhooks-service 8084, demo upstream 8090. Logs: .stack/logs/<service>.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

GATEWAY_PORT=${GATEWAY_PORT:-8080}
KEYS_PORT=${KEYS_PORT:-8081}
AUDIT_PORT=${AUDIT_PORT:-8082}
HEALTH_PORT=${HEALTH_PORT:-8083}
WEBHOOKS_PORT=${WEBHOOKS_PORT:-8084}
UPSTREAM_PORT=${UPSTREAM_PORT:-8090}
GATEWAY_ADMIN_PORT=${GATEWAY_ADMIN_PORT:-9080}
KEYS_ADMIN_PORT=${KEYS_ADMIN_PORT:-9081}
AUDIT_ADMIN_PORT=${AUDIT_ADMIN_PORT:-9082}
HEALTH_ADMIN_PORT=${HEALTH_ADMIN_PORT:-9083}
WEBHOOKS_ADMIN_PORT=${WEBHOOKS_ADMIN_PORT:-9084}
PROFILE=${STACK_PROFILE:-dev}

if ! command -v cmake >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing cmake (pingora's build needs it)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >/dev/null
  else
    echo "cmake is required to build pingora: sudo apt-get install -y cmake" >&2
    exit 1
  fi
fi

if [[ -n ${STACK_BIN_DIR:-} ]]; then
  # Prebuilt binaries (CI rehearsals run the same build many times).
  BIN=$STACK_BIN_DIR
else
  echo "==> building (cargo build --profile $PROFILE)"
  cargo build --profile "$PROFILE" --workspace --bins
  TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
  case "$PROFILE" in dev) BIN=$TARGET/debug ;; *) BIN=$TARGET/$PROFILE ;; esac
fi

STATE=${STACK_STATE_DIR:-$ROOT/.stack}
mkdir -p "$STATE/logs" "$STATE/data"
export DATA_DIR=$STATE/data
export LOG_FORMAT=${LOG_FORMAT:-json}
export RUST_LOG=${RUST_LOG:-info}
export KEYS_SERVICE_URL=http://127.0.0.1:$KEYS_PORT
export AUDIT_SERVICE_URL=http://127.0.0.1:$AUDIT_PORT
export HEALTH_SERVICE_URL=http://127.0.0.1:$HEALTH_PORT
export WEBHOOKS_SERVICE_URL=http://127.0.0.1:$WEBHOOKS_PORT
export DEFAULT_UPSTREAM_URL=http://127.0.0.1:$UPSTREAM_PORT
# The gateway signs the identity it injects; the services refuse anything unsigned. A fresh
# secret each start (kept only in this process tree's environment).
IDENTITY_SIGNING_SECRET=${IDENTITY_SIGNING_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export IDENTITY_SIGNING_SECRET
# webhooks-service encrypts endpoint signing secrets at rest with this key (32 bytes, hex).
# Kept in the state directory so secrets stay usable across restarts of the local stack.
if [[ -z ${WEBHOOKS_ENCRYPTION_KEY:-} ]]; then
  mkdir -p "${STACK_STATE_DIR:-$ROOT/.stack}"
  keyfile=${STACK_STATE_DIR:-$ROOT/.stack}/webhooks-encryption-key
  [[ -s $keyfile ]] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$keyfile")
  WEBHOOKS_ENCRYPTION_KEY=$(cat "$keyfile")
fi
export WEBHOOKS_ENCRYPTION_KEY

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "==> stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

start() { # name, then env assignments, then the binary
  local name=$1; shift
  env "$@" >>"$STATE/logs/$name.log" 2>&1 &
  pids+=($!)
}

wait_for() { # name url
  for _ in $(seq 1 100); do
    curl -fs -o /dev/null "$2" && return 0
    sleep 0.1
  done
  echo "$1 did not start; see $STATE/logs/$1.log" >&2
  tail -20 "$STATE/logs/$1.log" >&2
  exit 1
}

start audit-service AUDIT_LISTEN_ADDR=127.0.0.1:$AUDIT_PORT AUDIT_ADMIN_ADDR=127.0.0.1:$AUDIT_ADMIN_PORT "$BIN/audit-service"
start keys-service KEYS_LISTEN_ADDR=127.0.0.1:$KEYS_PORT KEYS_ADMIN_ADDR=127.0.0.1:$KEYS_ADMIN_PORT "$BIN/keys-service"
# Local receivers (http://localhost:…) are allowed here: never set this in production.
start webhooks-service WEBHOOKS_LISTEN_ADDR=127.0.0.1:$WEBHOOKS_PORT WEBHOOKS_ADMIN_ADDR=127.0.0.1:$WEBHOOKS_ADMIN_PORT WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS=${WEBHOOKS_ALLOW_PRIVATE_DESTINATIONS:-1} "$BIN/webhooks-service"
start health-service HEALTH_LISTEN_ADDR=127.0.0.1:$HEALTH_PORT HEALTH_ADMIN_ADDR=127.0.0.1:$HEALTH_ADMIN_PORT "$BIN/health-service"
start demo-upstream DEMO_UPSTREAM_LISTEN_ADDR=127.0.0.1:$UPSTREAM_PORT "$BIN/demo-upstream"
wait_for audit-service "http://127.0.0.1:$AUDIT_PORT/livez"
wait_for keys-service "http://127.0.0.1:$KEYS_PORT/livez"
wait_for webhooks-service "http://127.0.0.1:$WEBHOOKS_PORT/livez"
wait_for health-service "http://127.0.0.1:$HEALTH_PORT/livez"
start gateway GATEWAY_LISTEN_ADDR=127.0.0.1:$GATEWAY_PORT GATEWAY_ADMIN_ADDR=127.0.0.1:$GATEWAY_ADMIN_PORT AUTH_DEV_BYPASS=1 NODE_ENV=development "$BIN/gateway"
wait_for gateway "http://127.0.0.1:$GATEWAY_PORT/health"

cat <<MSG

ReconLayer Edge is running (embedded default: SQLite in .stack/data, no Redis, dev bypass on).

  gateway          http://localhost:$GATEWAY_PORT      <- call the API here
  keys-service     http://localhost:$KEYS_PORT      (internal)
  audit-service    http://localhost:$AUDIT_PORT      (internal)
  health-service   http://localhost:$HEALTH_PORT      (internal)
  webhooks-service http://localhost:$WEBHOOKS_PORT      (internal; outbound webhooks and their workers)
  demo upstream    http://localhost:$UPSTREAM_PORT      (echoes the identity it receives)
  metrics          http://localhost:$GATEWAY_ADMIN_PORT/metrics (gateway; $KEYS_ADMIN_PORT-$HEALTH_ADMIN_PORT for the services)
  logs             .stack/logs/

First call:
  curl -s -X POST http://localhost:$GATEWAY_PORT/v1/api-keys \\
    -H 'x-organization-id: org_dev' -H 'content-type: application/json' \\
    -d '{"name":"my first key","scopes":["payment_intents:read"]}'

Ctrl-C stops everything.
MSG
wait
