#!/usr/bin/env bash
# Submits the whole hcld flow to SLURM: group fit -> one array task per subject -> group report,
# chained with --dependency=afterok so each level starts when the previous one succeeded.
#   BIDS_DIR=/data/bids OUTPUT_DIR=/data/out HCLD_SIF=$HOME/hcld.sif bash workflows/slurm/submit.sh
# Extra sbatch options (partition, account, GPUs) go in SBATCH_ARGS, e.g. "-p gpu --gres=gpu:1".
set -euo pipefail
HERE=$(dirname "$(realpath "${BASH_SOURCE[0]}")")
: "${BIDS_DIR:?set BIDS_DIR}" "${OUTPUT_DIR:?set OUTPUT_DIR}" "${HCLD_SIF:?set HCLD_SIF}"
export BIDS_DIR OUTPUT_DIR HCLD_SIF WORK_DIR HCLD_ARGS
N=$(find "$BIDS_DIR" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' | wc -l)
[ "$N" -gt 0 ] || { echo "submit.sh: no sub-* folders in $BIDS_DIR" >&2; exit 66; }
# shellcheck disable=SC2086
FIT=$(sbatch --parsable ${SBATCH_ARGS:-} --job-name=hcld-fit "$HERE/hcld.sbatch" group)
# shellcheck disable=SC2086
PART=$(sbatch --parsable ${SBATCH_ARGS:-} --job-name=hcld-participant --array="1-$N" \
  --dependency="afterok:$FIT" "$HERE/hcld.sbatch" participant)
# shellcheck disable=SC2086
REPORT=$(sbatch --parsable ${SBATCH_ARGS:-} --job-name=hcld-report \
  --dependency="afterok:$PART" "$HERE/hcld.sbatch" group)
echo "submitted: fit $FIT, participants $PART (1-$N), report $REPORT"
