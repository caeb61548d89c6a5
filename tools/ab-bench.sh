#!/usr/bin/env bash
# Alternating before/after benchmark of two cloro release binaries (docs/PERFORMANCE.md).
#
#   tools/ab-bench.sh BEFORE_BIN AFTER_BIN SCENARIO ROUNDS [bench flags...] > runs.jsonl
#
# Each round runs `bench --scenario SCENARIO --json` once with each binary; the order flips every
# round (A B, B A, ...) so neither a warm-up nor a slow patch of a shared machine favours one
# side. Each run is a fresh process with a fresh database. One JSON line per run on stdout:
# {"who": "before"|"after", "round": N, "r": <the bench's JSON object>}.
set -euo pipefail
before=$1 after=$2 scenario=$3 rounds=$4
shift 4
for i in $(seq 1 "$rounds"); do
  if (( i % 2 )); then order="before after"; else order="after before"; fi
  for who in $order; do
    if [[ $who == before ]]; then bin=$before; else bin=$after; fi
    line=$("$bin" bench --scenario "$scenario" --json "$@" 2>/dev/null | tail -n 1)
    printf '{"who":"%s","round":%d,"r":%s}\n' "$who" "$i" "$line"
  done
done
