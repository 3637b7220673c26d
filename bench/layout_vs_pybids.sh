#!/usr/bin/env bash
# bench/layout_vs_pybids.sh — BIDS layout indexing: hcld vs pybids.
#
# What it does
#   1. Generates (bench/make_big_bids.py, deterministic) a BIDS tree of
#      N subjects x 2 sessions of EMPTY imaging files (T1w + rest bold, each
#      with a JSON sidecar, plus sessions.tsv per subject, participants.tsv,
#      README, dataset_description.json): 9*N + 3 files. Default N=10000.
#   2. Creates a Python venv with pybids 0.22.0 (pinned in
#      bench/requirements-pybids.txt) unless it already exists.
#   3. hcld: builds `cargo build --release --example index_layout` and runs
#      `target/release/examples/index_layout ROOT`, which prints one JSON line
#      {"seconds_index", "seconds_query", "n_subjects", "n_sessions", "n_t1w"}.
#   4. pybids: runs bench/pybids_index.py ROOT (BIDSLayout(validate=False)
#      + get_subjects/get_sessions/get(T1w)), and once with validate=True.
#   5. Every process runs under bench/measure.py, which records wall time and
#      peak RSS (GNU `/usr/bin/time -v` if present, else getrusage). Each tool
#      gets untimed warm-up run(s) first, so all timings are WARM page cache;
#      the table shows medians over the timed runs.
#   6. Prints machine info and a Markdown table on stdout (progress goes to
#      stderr). Nothing is written into docs/: paste it into docs/benchmarks.md.
#
# Usage
#   bench/layout_vs_pybids.sh [-n N] [ROOT]
#     -n N   number of subjects (default: $BENCH_N or 10000)
#     ROOT   where to put the tree (default: $BENCH_ROOT, else a temp dir that
#            is removed at exit). A ROOT previously generated with the same N
#            is reused as is; one generated with another N is regenerated.
#
# Environment
#   BENCH_N=10000          subjects (same as -n)
#   BENCH_ROOT=DIR         tree location (same as ROOT)
#   BENCH_VENV=DIR         pybids venv (default: $HOME/.cache/hcld-bench-venv)
#   PYTHON=python3         interpreter for the helpers and to create the venv
#   HCLD_RUNS=5            timed hcld runs
#   PYBIDS_RUNS=3          timed pybids (validate=False) runs
#   WARMUP_RUNS=1          untimed warm-up runs per tool
#   PYBIDS_VALIDATE_RUNS=1 timed pybids validate=True runs (0 to skip)
#   SKIP_HCLD=1            skip hcld (no cargo build); pybids only
#   SKIP_PYBIDS=1          skip pybids entirely
#   HCLD_INDEX_BIN=PATH    use this prebuilt index_layout binary, no cargo build
#   RSS_METHOD=auto|gnu-time|rusage   how peak RSS is measured (auto)
#   KEEP_RESULTS=DIR       also copy the raw per-run JSONL results there
#
# Example
#   bench/layout_vs_pybids.sh                 # full run, N=10000
#   SKIP_HCLD=1 bench/layout_vs_pybids.sh -n 1000 /tmp/bids1k
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
PYTHON="${PYTHON:-python3}"

N="${BENCH_N:-10000}"
ROOT="${BENCH_ROOT:-}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        -n|--subjects) N="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option: $1" >&2; exit 2 ;;
        *) ROOT="$1"; shift ;;
    esac
done
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive integer, got '$N'" >&2; exit 2; }

BENCH_VENV="${BENCH_VENV:-$HOME/.cache/hcld-bench-venv}"
HCLD_RUNS="${HCLD_RUNS:-5}"
PYBIDS_RUNS="${PYBIDS_RUNS:-3}"
WARMUP_RUNS="${WARMUP_RUNS:-1}"
PYBIDS_VALIDATE_RUNS="${PYBIDS_VALIDATE_RUNS:-1}"
SKIP_HCLD="${SKIP_HCLD:-0}"
SKIP_PYBIDS="${SKIP_PYBIDS:-0}"
PYBIDS_VERSION="0.22.0"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/hcld-bench.XXXXXX")"
CLEAN_ROOT=""
cleanup() {
    if [[ -n "${KEEP_RESULTS:-}" && -d "$WORK" ]]; then
        mkdir -p "$KEEP_RESULTS" && cp "$WORK"/*.jsonl "$KEEP_RESULTS"/ 2>/dev/null || true
    fi
    rm -rf "$WORK"
    if [[ -n "$CLEAN_ROOT" ]]; then rm -rf "$CLEAN_ROOT"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. tree --
TAG="make_big_bids.py n_subjects=$N seed=0"
if [[ -z "$ROOT" ]]; then
    ROOT="$WORK/bids"
    CLEAN_ROOT="$ROOT"
fi
ROOT="$(mkdir -p "$ROOT" && cd "$ROOT" && pwd)"
if [[ -f "$ROOT/dataset_description.json" ]] && grep -qF "\"$TAG\"" "$ROOT/dataset_description.json"; then
    log "reusing tree generated earlier with N=$N at $ROOT"
else
    log "generating N=$N subjects x 2 sessions at $ROOT"
    "$PYTHON" "$SCRIPT_DIR/make_big_bids.py" "$ROOT" --subjects "$N" --overwrite >&2
fi
FILES="$(find "$ROOT" -type f | wc -l | tr -d ' ')"
log "tree has $FILES files ($(du -sh "$ROOT" | cut -f1) on disk)"

# ---------------------------------------------------------------- helpers --
RESULTS="$WORK/results.jsonl"
WARMUPS="$WORK/warmup.jsonl"
: >"$RESULTS"; : >"$WARMUPS"

# measure LABEL OUTFILE CMD... : one measured run, appended to OUTFILE.
measure() {
    local label="$1" out="$2"; shift 2
    local line
    line="$("$PYTHON" "$SCRIPT_DIR/measure.py" --label "$label" -- "$@")"
    printf '%s\n' "$line" >>"$out"
    "$PYTHON" -c 'import json,sys; o=json.loads(sys.argv[1]); print("  %-16s index %.3fs  query %.3fs  wall %.3fs  peak RSS %.0f MiB  (subjects=%s sessions=%s t1w=%s)" % (o["label"], o["seconds_index"], o["seconds_query"], o["wall_seconds"], o["peak_rss_kb"]/1024, o["n_subjects"], o["n_sessions"], o["n_t1w"]))' "$line" >&2
}

# run_tool LABEL WARMUPS TIMED CMD...
run_tool() {
    local label="$1" nwarm="$2" nrun="$3"; shift 3
    local i
    for ((i = 1; i <= nwarm; i++)); do
        log "$label: warm-up $i/$nwarm (not counted)"
        measure "$label" "$WARMUPS" "$@"
    done
    for ((i = 1; i <= nrun; i++)); do
        log "$label: timed run $i/$nrun"
        measure "$label" "$RESULTS" "$@"
    done
}

# ---------------------------------------------------------------- 3. hcld --
HCLD_VERSION="n/a"
if [[ "$SKIP_HCLD" != "1" ]]; then
    if [[ -n "${HCLD_INDEX_BIN:-}" ]]; then
        HCLD_BIN="$HCLD_INDEX_BIN"
    else
        log "building: cargo build --release --example index_layout"
        (cd "$REPO" && cargo build --release --example index_layout) >&2
        HCLD_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/index_layout"
    fi
    [[ -x "$HCLD_BIN" ]] || { echo "index_layout binary not found: $HCLD_BIN" >&2; exit 1; }
    HCLD_VERSION="$(awk -F'"' '/^\[workspace.package\]/{w=1} w && /^version *=/{print $2; exit}' "$REPO/Cargo.toml")"
    GIT_REV="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || true)"
    if [[ -n "$GIT_REV" ]]; then
        git -C "$REPO" diff --quiet HEAD 2>/dev/null || GIT_REV="$GIT_REV-dirty"
        HCLD_VERSION="${HCLD_VERSION:-?} ($GIT_REV)"
    fi
    run_tool hcld "$WARMUP_RUNS" "$HCLD_RUNS" "$HCLD_BIN" "$ROOT"
else
    log "SKIP_HCLD=1: not building or running hcld"
fi

# -------------------------------------------------------------- 2+4. pybids --
if [[ "$SKIP_PYBIDS" != "1" ]]; then
    VPY="$BENCH_VENV/bin/python"
    if ! "$VPY" -c "import bids,sys; sys.exit(bids.__version__ != '$PYBIDS_VERSION')" 2>/dev/null; then
        log "creating venv $BENCH_VENV with pybids==$PYBIDS_VERSION"
        "$PYTHON" -m venv "$BENCH_VENV"
        "$VPY" -m pip install --quiet --upgrade pip >&2
        if ! "$VPY" -m pip install --quiet -r "$SCRIPT_DIR/requirements-pybids.txt" >&2; then
            log "pinned requirements did not install on this Python; falling back to pybids==$PYBIDS_VERSION with resolved deps"
            "$VPY" -m pip install --quiet "pybids==$PYBIDS_VERSION" >&2
        fi
    fi
    PYBIDS_ENV="$("$VPY" -c 'import sys, bids, sqlalchemy, pandas; print("pybids %s, SQLAlchemy %s, pandas %s, Python %s" % (bids.__version__, sqlalchemy.__version__, pandas.__version__, sys.version.split()[0]))')"
    log "venv: $BENCH_VENV ($PYBIDS_ENV)"

    run_tool pybids "$WARMUP_RUNS" "$PYBIDS_RUNS" "$VPY" "$SCRIPT_DIR/pybids_index.py" "$ROOT"
    if [[ "$PYBIDS_VALIDATE_RUNS" -gt 0 ]]; then
        # Cache is already warm from the validate=False runs.
        run_tool pybids-validate 0 "$PYBIDS_VALIDATE_RUNS" "$VPY" "$SCRIPT_DIR/pybids_index.py" "$ROOT" --validate
    fi
else
    PYBIDS_ENV="skipped"
fi

# ---------------------------------------------------------------- 5. report --
CPU="$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
MEM="$(awk '/^MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo 2>/dev/null || true)"
FS="$(df -PT "$ROOT" 2>/dev/null | awk 'NR==2{print $2}' || true)"

echo "### BIDS layout indexing: hcld vs pybids"
echo
echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- Machine: $(nproc) CPUs, ${CPU:-unknown CPU}, ${MEM:-? RAM}, $(uname -sr), tree on ${FS:-?}"
echo "- Dataset: bench/make_big_bids.py, $N subjects x 2 sessions, $FILES files (imaging files empty; JSON sidecars small)"
echo "- pybids env: $PYBIDS_ENV"
echo "- Method: each tool gets $WARMUP_RUNS untimed warm-up run(s) first, so all timings are with a WARM OS file cache;"
echo "  medians over $HCLD_RUNS hcld / $PYBIDS_RUNS pybids runs (validate=True: $PYBIDS_VALIDATE_RUNS run(s), no extra warm-up)."
echo "  Index = layout construction (pybids: default indexer incl. sidecar metadata, in-memory DB);"
echo "  query = get_subjects + get_sessions + get(suffix=T1w, datatype=anat, extension=.nii/.nii.gz);"
echo "  wall = whole process incl. startup/imports."
echo
"$PYTHON" "$SCRIPT_DIR/report.py" "$RESULTS" --files "$FILES" --subjects "$N" --hcld-version "$HCLD_VERSION"
