#!/usr/bin/env bash
# bench/participant_timing.sh — wall time and peak memory of the participant level.
#
# Runs `hcld ... participant --force` (every output recomputed) three times per --nprocs value on
#   (a) the bundled example (4 real 2 mm T1w, 2 sites), and
#   (b) two real 1 mm T1w (176×256×256 Siemens TrioTim, 170×256×256 Philips Elition X), copied from
#       ../shared/data/t1w (skipped when that folder is absent),
# then a resumed run (all outputs current). Prints one line per run: label, seconds, peak RSS.
# Needs GNU time (/usr/bin/time, Debian package `time`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet
BIN=target/release/hcld
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
measure() { # label args...
  local label=$1; shift
  /usr/bin/time -f "$label	%e s	%M KB" "$BIN" "$@" 2>&1 >/dev/null | tail -1
}
echo "# $(date -u +%F) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
"$BIN" examples/multisite "$TMP/ex" participant >/dev/null 2>&1
for n in 1 2; do
  for _ in 1 2 3; do measure "example 4×2mm nprocs=$n" examples/multisite "$TMP/ex" participant --force --nprocs "$n"; done
done
measure "example resume (all current)" examples/multisite "$TMP/ex" participant
SHARED=../shared/data/t1w
if [ -d "$SHARED" ]; then
  mkdir -p "$TMP/b1/sub-01/anat" "$TMP/b1/sub-02/anat"
  cp "$SHARED/siemens-triotim3T_gsu-cabi_mprage1mm.nii.gz" "$TMP/b1/sub-01/anat/sub-01_T1w.nii.gz"
  cp "$SHARED/philips-elitionx3T_ganji_adnimprage1mm.nii.gz" "$TMP/b1/sub-02/anat/sub-02_T1w.nii.gz"
  echo '{"Name": "timing", "BIDSVersion": "1.10.0"}' > "$TMP/b1/dataset_description.json"
  for n in 1 2; do
    for _ in 1 2 3; do measure "2×1mm nprocs=$n" "$TMP/b1" "$TMP/b1out" participant --force --nprocs "$n"; done
  done
fi
