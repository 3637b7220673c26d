#!/usr/bin/env bash
# scripts/pretrain_autoencoder.sh — trains the pretrained autoencoder hcld ships
# (models/pretrained/), by one resumable command:
#   bash scripts/pretrain_autoencoder.sh            # WORK=hcld-pretrain-work, DATA=../shared/data/t1w
# 1. Domain randomisation: hcld-simulate renders the scans whose licence allows redistributing
#    derived weights (TRAIN below: BSD-2-Clause, and the MNI/McGill permissive notice of Colin27;
#    see ../shared/data/SOURCE.md) at SITES random sites with --site-effect EFFECT (wider than the
#    documented site ranges) as new deformed anatomies.
# 2. hcld preprocesses every rendering (participant level, preprocessing only) onto the 2 mm
#    template grid, as the pipeline preprocesses any input.
# 3. The scans whose licence does not allow it (IXI: CC BY-SA 3.0; the TrioTim scan: no licence)
#    are preprocessed as the held-out set: scored, never trained on.
# 4. hcld-pretrain trains the `cpu` configuration's autoencoder on random augmented 32³ patches
#    and scores the round trip on both sets; the weights and their card go to OUT. The shipped
#    weights were trained in two runs, as this script replays them: STEPS_A steps (seed SEED), then
#    STEPS more from those weights with a fresh optimiser state and fresh patches (seed SEED + 1).
#    To train further, run hcld-pretrain with --init OUT/autoencoder.bpk and a new seed.
# Every step skips what is already done, and training resumes from its checkpoints in WORK:
# run the same command again after an interruption.
# Environment: DATA, WORK, OUT (models/pretrained), STEPS_A (462), STEPS (330), BATCH (2), PATCH (32),
# LR (5e-4), SITES (6), EFFECT (1.5), SEED (101), NPROCS (all CPUs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=${DATA:-../shared/data/t1w}
WORK=${WORK:-hcld-pretrain-work}
OUT=${OUT:-models/pretrained}
STEPS_A=${STEPS_A:-462}
STEPS=${STEPS:-330}
BATCH=${BATCH:-2}
PATCH=${PATCH:-32}
LR=${LR:-5e-4}
SITES=${SITES:-6}
EFFECT=${EFFECT:-1.5}
SEED=${SEED:-101}
NPROCS=${NPROCS:-$(nproc)}
TRAIN="siemens-prismafit3T_iu-xa30_mprage2mm_noprescannorm siemens-prismafit3T_iu-xa30_mprage2mm_prescannorm philips-elitionx3T_ganji_adnimprage1mm uih-umr770-3T_uih_t1gre-ir1mm_run-1 uih-umr770-3T_uih_t1gre-ir1mm_run-2 colin27-avg27_mni-philips1p5T_ch2_1mm"
HOLDOUT="philips-intera3T_ixi-hh_IXI012-HH-1211_t1w2mm philips-intera3T_ixi-hh_IXI132-HH-1415_t1w2mm philips-intera3T_ixi-hh_IXI255-HH-1882_t1w2mm siemens-triotim3T_gsu-cabi_mprage1mm"
cargo build --release --quiet --bin hcld --bin hcld-simulate --bin hcld-pretrain
mkdir -p "$WORK"
n_train=$(echo "$TRAIN" | wc -w)
subjects=$((n_train * SITES))

if [ ! -f "$WORK/sim/dataset_description.json" ]; then
  src=()
  for n in $TRAIN; do src+=("$DATA/$n.nii.gz"); done
  target/release/hcld-simulate "$WORK/sim" --source "${src[@]}" --subjects "$subjects" \
    --sites "$SITES" --site-effect "$EFFECT" --seed "$SEED" --nprocs "$NPROCS"
fi
if [ ! -d "$WORK/holdout" ]; then
  rm -rf "$WORK/holdout.tmp"
  mkdir -p "$WORK/holdout.tmp"
  i=0
  rows="participant_id"
  for n in $HOLDOUT; do
    i=$((i + 1))
    mkdir -p "$WORK/holdout.tmp/sub-$i/anat"
    cp "$DATA/$n.nii.gz" "$WORK/holdout.tmp/sub-$i/anat/sub-${i}_T1w.nii.gz"
    rows="$rows
sub-$i"
  done
  echo "$rows" > "$WORK/holdout.tmp/participants.tsv"
  printf '{"Name": "hcld pretraining: held-out scans", "BIDSVersion": "1.10.0"}\n' \
    > "$WORK/holdout.tmp/dataset_description.json"
  mv "$WORK/holdout.tmp" "$WORK/holdout"
fi
# Preprocessing only (no model exists in these output folders); current outputs are kept.
target/release/hcld "$WORK/sim" "$WORK/sim-out" participant --nprocs "$NPROCS" -w "$WORK/hcld-work"
target/release/hcld "$WORK/holdout" "$WORK/holdout-out" participant --nprocs "$NPROCS" -w "$WORK/hcld-work"
pretrain() { # OUT SEED STEPS [options...]
  local out=$1 seed=$2 steps=$3
  shift 3
  target/release/hcld-pretrain "$out" --images "$WORK/sim-out" --holdout "$WORK/holdout-out" \
    --config cpu --patch "$PATCH" --batch "$BATCH" --steps "$steps" --learning-rate "$LR" \
    --seed "$seed" --checkpoint-every 25 --nprocs "$NPROCS" "$@"
}
[ -f "$WORK/stage-a/autoencoder.bpk" ] || pretrain "$WORK/stage-a" "$SEED" "$STEPS_A" -w "$WORK/train-a"
pretrain "$OUT" $((SEED + 1)) "$STEPS" --init "$WORK/stage-a/autoencoder.bpk" -w "$WORK/train-b"
