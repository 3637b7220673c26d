#!/usr/bin/env bash
# bench/registration_vs_ants.sh — hcld's affine registration vs ANTsPy on the real scans in
# ../shared/data/t1w (same fixed image, same machine, 2 threads each), scored identically.
# Needs a Python with antspyx 0.6.3, nibabel and scipy: set ANTS_PYTHON (default: creates a venv in
# $TMPDIR/hcld-ants-venv from bench/requirements-ants.txt).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARED=${SHARED:-../shared/data/t1w}
PY=${ANTS_PYTHON:-}
if [ -z "$PY" ]; then
  VENV="${TMPDIR:-/tmp}/hcld-ants-venv"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements-ants.txt
  PY="$VENV/bin/python"
fi
export ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=2 RAYON_NUM_THREADS=2
cargo build --release --quiet --example register_to_template
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "# $(date -u +%F) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
target/release/examples/register_to_template "$OUT" "$SHARED"/*.nii.gz > "$OUT/hcld.jsonl"

"$PY" bench/registration_vs_ants.py "$OUT" "$OUT/hcld.jsonl" "$SHARED"/*.nii.gz
