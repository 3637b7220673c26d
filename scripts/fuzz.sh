#!/usr/bin/env bash
# Fuzzes hcld's readers of untrusted input (issue 9) with cargo-fuzz (libFuzzer), each target for
# a bounded number of executions, seeded from the repository's real files (the example dataset and
# tests/data: no corpus is checked in). Prints executions, time and findings per target; a crash
# leaves its input in fuzz/artifacts/<target>/ (turn it into a regression test in
# tests/it/bad_inputs.rs or the reader's unit tests, then fix the reader).
#
#   bash scripts/fuzz.sh                 # every target, 1 000 000 executions each
#   RUNS=200000 bash scripts/fuzz.sh nifti_reader
#
# Needs a nightly toolchain (rustup toolchain install nightly) and cargo-fuzz (installed here from
# crates.io when missing). Not part of the test command: figures go to docs/reliability.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-1000000}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(nifti_reader bids_filename tsv_table json_sidecar)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}

# Up to N files matching find's arguments, without a pipe (find would die of SIGPIPE under
# pipefail).
pick() { # N FIND_ARGS...
  local n=$1
  shift
  local files
  mapfile -t files < <(find "$@" -type f | sort)
  printf '%s\n' "${files[@]:0:$n}"
}

seed() { # TARGET DIR
  mkdir -p "$2"
  local f
  case "$1" in
    nifti_reader)
      while read -r f; do
        [ -n "$f" ] || continue
        cp "$f" "$2/$(echo "$f" | tr / _)"
        # The first 64 kB uncompressed: a header plus some voxels, cheap to mutate.
        (gzip -dc "$f" 2>/dev/null || true) | head -c 65536 >"$2/$(echo "$f" | tr / _).head" || true
      done < <(pick 40 tests/data examples -size -2M \( -name '*.nii' -o -name '*.nii.gz' \)) ;;
    bids_filename)
      while read -r f; do
        [ -n "$f" ] && basename "$f" >"$2/$(echo "$f" | tr / _).name"
      done < <(pick 400 examples tests/data/bids-examples) ;;
    tsv_table)
      while read -r f; do
        [ -n "$f" ] && cp "$f" "$2/$(echo "$f" | tr / _)"
      done < <(pick 60 examples tests/data -size -1M -name '*.tsv') ;;
    json_sidecar)
      while read -r f; do
        [ -n "$f" ] && cp "$f" "$2/$(echo "$f" | tr / _)"
      done < <(pick 150 examples tests/data -size -1M -name '*.json') ;;
  esac
  # An empty input as well (cargo-fuzz refuses an empty corpus folder).
  : >"$2/empty"
}

printf '%-14s %12s %9s %10s %s\n' target executions seconds exec/s findings
for t in "${TARGETS[@]}"; do
  corpus="fuzz/corpus/$t"
  [ -d "$corpus" ] || seed "$t" "$corpus"
  log="fuzz/$t.log"
  start=$(date +%s)
  status=0
  # -rss_limit_mb/-malloc_limit_mb: a reader that allocates what a header claims, not what the
  # bytes hold, is a finding. -timeout: a hang is a finding.
  # -max_len: inputs up to a NIfTI header plus 64 kB of voxels (the seeds' size), 16 kB of text.
  case "$t" in nifti_reader) max_len=65536 ;; *) max_len=16384 ;; esac
  cargo "+$TOOLCHAIN" fuzz run --release --sanitizer none "$t" "$corpus" -- \
    -runs="$RUNS" -max_len="$max_len" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
    -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  seconds=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  findings=$(find "fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)
  printf '%-14s %12s %9s %10s %s\n' "$t" "${execs:-?}" "$seconds" \
    "$(( ${execs:-0} / (seconds > 0 ? seconds : 1) ))" "$findings"
  if [ "$status" != 0 ]; then
    tail -30 "$log"
    echo "fuzz: $t stopped with status $status; inputs in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
