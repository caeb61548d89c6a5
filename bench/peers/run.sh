#!/usr/bin/env bash
# Issue 14's peer comparison: graphile-worker and BullMQ beside cloro, in alternating rounds on the
# same PostgreSQL and Redis, then a table of medians (see README.md).
#
#   bench/peers/run.sh [--rounds N] [--out FILE]
#
# Environment: PEERS_PG (default postgres://postgres@127.0.0.1:5432/test), PEERS_REDIS (default
# redis://127.0.0.1:6379), CLORO_BIN (default target/release/cloro, from the repository's root),
# PEERS_JOBS (default 50000; the same count is given to cloro's --tasks).
# Every run's JSON line goes to --out (default: a temporary file, named at the end).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rounds=3
out=""
while (( $# )); do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
export PEERS_PG=${PEERS_PG:-postgres://postgres@127.0.0.1:5432/test}
export PEERS_REDIS=${PEERS_REDIS:-redis://127.0.0.1:6379}
jobs=${PEERS_JOBS:-50000}
cloro=${CLORO_BIN:-$root/target/release/cloro}
[[ -n $out ]] || out=$(mktemp /tmp/cloro-peers-XXXXXX.jsonl)
: > "$out"

if [[ ! -d $here/node_modules ]]; then
  echo "installing the peers (npm ci)..." >&2
  (cd "$here" && npm ci --no-audit --no-fund >&2)
fi

cloro_drain=1 cloro_any=1
if [[ ! -x $cloro ]]; then
  echo "SKIPPING cloro: no executable at $cloro (build it with cargo build --release, or set CLORO_BIN)" >&2
  cloro_any=0 cloro_drain=0
elif ! "$cloro" bench --help 2>/dev/null | grep -q 'drain-only'; then
  echo "SKIPPING cloro's drain: $cloro has no 'bench --scenario drain-only' yet (its enqueue still runs)" >&2
  cloro_drain=0
fi

# One run; appends {"who", "round", "enqueuePerSec"|"drainPerSec", "r": <the run's own JSON>} to $out.
run_one() {
  local who=$1 round=$2 line=""
  echo "round $round: $who" >&2
  # A failed run leaves $line empty (and is reported below) instead of ending the script.
  set +e
  case $who in
    graphile) line=$(cd "$here" && node graphile.mjs | tail -n 1) ;;
    bullmq) line=$(cd "$here" && node bullmq.mjs | tail -n 1) ;;
    cloro-sqlite-drain) line=$("$cloro" bench --scenario drain-only --json --tasks "$jobs" 2>/dev/null | tail -n 1) ;;
    cloro-pg-drain) line=$("$cloro" bench --scenario drain-only --json --tasks "$jobs" --database "$PEERS_PG" 2>/dev/null | tail -n 1) ;;
    cloro-pg-drain-2) line=$("$cloro" bench --scenario drain-only --json --tasks "$jobs" --database "$PEERS_PG" --nodes 2 2>/dev/null | tail -n 1) ;;
    cloro-sqlite-enqueue) line=$("$cloro" bench --scenario enqueue --json --tasks "$jobs" 2>/dev/null | tail -n 1) ;;
    cloro-pg-enqueue) line=$("$cloro" bench --scenario enqueue --json --tasks "$jobs" --database "$PEERS_PG" 2>/dev/null | tail -n 1) ;;
  esac
  set -e
  if [[ -z $line ]]; then
    echo "  $who printed nothing (failed); left out of the medians" >&2
    return 0
  fi
  printf '{"who":"%s","round":%d,"r":%s}\n' "$who" "$round" "$line" >> "$out"
  echo "  $line" >&2
}

order=(graphile bullmq)
(( cloro_drain )) && order+=(cloro-sqlite-drain cloro-pg-drain cloro-pg-drain-2)
(( cloro_any )) && order+=(cloro-sqlite-enqueue cloro-pg-enqueue)
for round in $(seq 1 "$rounds"); do
  if (( round % 2 )); then seq_=("${order[@]}"); else
    seq_=(); for (( i=${#order[@]}-1; i>=0; i-- )); do seq_+=("${order[i]}"); done
  fi
  for who in "${seq_[@]}"; do run_one "$who" "$round"; done
done

echo "runs: $out" >&2
node "$here/table.mjs" "$out"
