#!/usr/bin/env bash
# bench/validator_vs_deno.sh — validate one generated BIDS tree with hcld's bids-validator-rs and
# with the official bids-validator-deno, and print wall time, peak RSS and what each found.
#
# Usage: bench/validator_vs_deno.sh [-n N] [ROOT]
#   -n N   subjects (default $BENCH_N or 10000); ROOT: tree location (default: a temp dir, removed
#          at exit; a ROOT generated earlier with the same N is reused, see make_big_bids.py).
# Environment: BIDS_VALIDATOR (default: bids-validator-deno on PATH, else a venv made at
#   $BENCH_VENV_DENO, default ~/.cache/hcld-bench-deno), RS_RUNS (3), DENO_RUNS (1).
# Needs GNU time (/usr/bin/time). Timings are warm-cache (one untimed bids-validator-rs run first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${BENCH_N:-10000}
if [ "${1:-}" = "-n" ]; then N=$2; shift 2; fi
ROOT=${1:-}
if [ -z "$ROOT" ]; then
  TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT; ROOT="$TMP/bids"
fi
if [ ! -f "$ROOT/dataset_description.json" ]; then
  python3 bench/make_big_bids.py "$ROOT" --subjects "$N" >&2
fi
VALIDATOR=${BIDS_VALIDATOR:-$(command -v bids-validator-deno || true)}
if [ -z "$VALIDATOR" ]; then
  VENV=${BENCH_VENV_DENO:-$HOME/.cache/hcld-bench-deno}
  [ -x "$VENV/bin/bids-validator-deno" ] || { python3 -m venv "$VENV"; "$VENV/bin/pip" install -q "bids-validator-deno==3.0.2"; }
  VALIDATOR="$VENV/bin/bids-validator-deno"
fi
cargo build --release --quiet -p bids_validator
RS=target/release/bids-validator-rs
OUT=$(mktemp -d)
run() { # label cmd...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$OUT/time" "$@" > "$OUT/out" 2>/dev/null || true
  read -r secs kb < <(tail -1 "$OUT/time")
  echo "$label: ${secs} s, peak RSS $((kb / 1024)) MiB"
}
"$RS" "$ROOT" > /dev/null || true
echo "# $(date -u +%F) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs); $(find "$ROOT" -type f | wc -l) files"
for _ in $(seq "${RS_RUNS:-3}"); do run "bids-validator-rs" "$RS" --json "$ROOT"; done
python3 -c "import json,sys,collections; r=json.load(open('$OUT/out')); print('  rs found', dict(collections.Counter((i['severity'], i['code']) for i in r['issues']['issues'])))"
for _ in $(seq "${DENO_RUNS:-1}"); do run "bids-validator-deno $(NO_COLOR=1 "$VALIDATOR" --version 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -o '[0-9][0-9.]*' | head -1)" "$VALIDATOR" --format json "$ROOT"; done
if [ "${DENO_RUNS:-1}" -gt 0 ]; then
  python3 -c "import json,sys,collections; r=json.load(open('$OUT/out')); print('  deno found', dict(collections.Counter((i['severity'], i['code']) for i in r['issues']['issues'])))"
fi
rm -rf "$OUT"
