#!/usr/bin/env bash
# Schema-driven API fuzzing: runs schemathesis (pinned) against a live `cloro serve` on a fresh
# database, from the server's own /openapi.json, with the key the server printed.
# Fails on any 5xx, and on any response whose status, content type, headers or body break the
# document. Time-bounded (SCHEMATHESIS_SECONDS, default 120).
#
#   .ci/schemathesis.sh                       # builds target/debug/cloro if needed
#   CLORO_BIN=target/release/cloro .ci/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
SECONDS_BUDGET="${SCHEMATHESIS_SECONDS:-120}"
VENV="${SCHEMATHESIS_VENV:-target/schemathesis-venv}"
BIN="${CLORO_BIN:-target/debug/cloro}"

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$ST_VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$ST_VERSION"
fi
if [ -z "${CLORO_BIN:-}" ]; then
  cargo build --locked --bin cloro
fi

tmp="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$BIN" serve --listen "127.0.0.1:$port" --database "$tmp/st.db" --sim-latency-ms 0..5 \
  >"$tmp/stdout" 2>"$tmp/stderr" &
pid=$!
cleanup() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

for _ in $(seq 1 100); do
  grep -q "cloro listening" "$tmp/stdout" 2>/dev/null && break
  sleep 0.1
done
key="$(python3 -c 'import json,sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        print(json.loads(line)["apiKey"]); break' "$tmp/stdout")"
[ -n "$key" ] || { echo "the server printed no API key"; cat "$tmp/stderr"; exit 1; }

"$VENV/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --max-time "$SECONDS_BUDGET" \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --suppress-health-check all \
  --warnings off
