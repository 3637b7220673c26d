#!/usr/bin/env bash
# bench/bias_vs_sitk.sh — hcld's bias correction vs SimpleITK N4 on the Siemens Prisma pair in
# ../shared/data/t1w (the scanner's Prescan Normalize reconstruction is the reference).
# Needs a Python with SimpleITK 2.5.7 and numpy: SITK_PYTHON (default: a venv from
# bench/requirements-ants.txt, shared with registration_vs_ants.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARED=${SHARED:-../shared/data/t1w}
PY=${SITK_PYTHON:-}
if [ -z "$PY" ]; then
  VENV="${TMPDIR:-/tmp}/hcld-ants-venv"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements-ants.txt
  PY="$VENV/bin/python"
fi
export RAYON_NUM_THREADS=2
cargo build --release --quiet --example bias_correct
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "# $(date -u +%F) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
best=""
for _ in 1 2 3; do
  s=$(target/release/examples/bias_correct "$SHARED/siemens-prismafit3T_iu-xa30_mprage2mm_noprescannorm.nii.gz" "$WORK" "$SHARED/siemens-prismafit3T_iu-xa30_mprage2mm_prescannorm.nii.gz" | grep -o '"seconds":[0-9.]*' | cut -d: -f2)
  if [ -z "$best" ] || awk "BEGIN{exit !($s < $best)}"; then best=$s; fi
done
echo "hcld bias correction, best of 3: $best s"
"$PY" bench/bias_vs_sitk.py "$WORK" "$best" "$SHARED/siemens-prismafit3T_iu-xa30_mprage2mm_prescannorm.nii.gz"
