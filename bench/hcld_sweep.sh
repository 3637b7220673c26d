#!/usr/bin/env bash
# bench/hcld_sweep.sh — chooses HCLD's harmonisation path (inversion depth, x̂₀ clipping, output
# mode, step counts) on the VALIDATION simulation of bench/evaluation.sh, with one trained model:
# the group level runs once (preprocess, fit Nyúl, train HCLD), then every setting harmonises the
# same images and is scored by `group --evaluate`. Prints one Markdown row per setting (the
# `hcld` row of evaluation/metrics.tsv) after the baselines' rows. The test simulation is never
# touched here: report the chosen setting on it with bench/evaluation.sh.
# Environment: SUBJECTS (48), SITES (4), VAL_SEED (1), CONFIG (cpu: the default, on the shipped
# autoencoder), EPOCHS_AE and EPOCHS_LDM (empty: the configuration's default training; set, they
# are passed as --epochs-ae / --epochs-ldm), DATA (../shared/data/t1w), BENCH_DIR (default a
# temporary folder),
# STRENGTHS ("0.02 0.05 0.1 0.2 0.3 0.6"), MODES ("intensity-map residual generative"),
# CLIPS ("off"), STEPS ("30:10", inversion:sampling pairs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SUBJECTS=${SUBJECTS:-48}
SITES=${SITES:-4}
VAL_SEED=${VAL_SEED:-1}
# shellcheck source=bench/training_args.sh
source bench/training_args.sh
DATA=${DATA:-../shared/data/t1w}
STRENGTHS=${STRENGTHS:-0.02 0.05 0.1 0.2 0.3 0.6}
MODES=${MODES:-intensity-map residual generative}
CLIPS=${CLIPS:-off}
STEPS=${STEPS:-30:10}
# The validation sources of bench/evaluation.sh.
VAL_SOURCES="philips-intera3T_ixi-hh_IXI012-HH-1211_t1w2mm philips-intera3T_ixi-hh_IXI255-HH-1882_t1w2mm siemens-prismafit3T_iu-xa30_mprage2mm_prescannorm siemens-triotim3T_gsu-cabi_mprage1mm"
cargo build --release --quiet --bin hcld --bin hcld-simulate
DIR=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$DIR/bin"
cp target/release/hcld target/release/hcld-simulate "$DIR/bin/"
HCLD=$DIR/bin/hcld
echo "# $(date -u +%F) $(nproc) CPUs, ${TRAINING[*]}, $SUBJECTS subjects, validation seed $VAL_SEED"

row() { # METRICS_TSV METHOD LABEL -> one Markdown row
  python3 - "$@" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
cols = ["site_accuracy", "mean_pairwise_w1", "gradient_correlation", "ssim", "psnr", "tissue_dice", "volume_change", "identity_ssim"]
for r in rows:
    if r["method"] == sys.argv[2]:
        print("| " + sys.argv[3] + " | " + " | ".join(r[c] for c in cols) + " |")
PY
}

BASE=$DIR/validation-out
if [ ! -f "$BASE/.sweep-base-done" ]; then
  rm -rf "${DIR:?}/validation" "$BASE" "$BASE-work"
  src=()
  for n in $VAL_SOURCES; do src+=("$DATA/$n.nii.gz"); done
  "$DIR/bin/hcld-simulate" "$DIR/validation" --source "${src[@]}" --subjects "$SUBJECTS" \
    --sites "$SITES" --seed "$VAL_SEED" 2>&1 | tail -1
  t0=$(date +%s)
  "$HCLD" "$DIR/validation" "$BASE" group --method all "${TRAINING[@]}" \
    -w "$BASE-work" --target-site A 2>"$BASE-group.log" \
    || { tail -5 "$BASE-group.log"; exit 1; }
  "$HCLD" "$DIR/validation" "$BASE" participant --method none,zscore,whitestripe,nyul \
    -w "$BASE-work" --target-site A 2>"$BASE-participant.log" \
    || { tail -5 "$BASE-participant.log"; exit 1; }
  echo "(group + baselines: $(( $(date +%s) - t0 )) s)"
  touch "$BASE/.sweep-base-done"
fi

echo
echo "| setting | site_accuracy | mean_pairwise_w1 | gradient_correlation | ssim | psnr | tissue_dice | volume_change | identity_ssim |"
echo "|---|---|---|---|---|---|---|---|---|"
first=1
for steps in $STEPS; do
  for clip in $CLIPS; do
    for strength in $STRENGTHS; do
      for mode in $MODES; do
        name="s$strength-$clip-$mode-${steps/:/x}"
        out=$DIR/sweep-$name
        if [ ! -f "$out/evaluation/metrics.tsv" ]; then
          rm -rf "$out"
          # Hard links: hcld replaces files by renaming, so the base is never written through.
          cp -al "$BASE" "$out"
          rm -rf "$out/evaluation"
          "$HCLD" "$DIR/validation" "$out" participant --method hcld -w "$BASE-work" --target-site A \
            --strength "$strength" --clip-x0 "$clip" --output-mode "$mode" \
            --inversion-steps "${steps%%:*}" --sampling-steps "${steps##*:}" 2>"$out.log" \
            || { tail -5 "$out.log"; exit 1; }
          "$HCLD" "$DIR/validation" "$out" group --evaluate --method all "${TRAINING[@]}" \
            -w "$BASE-work" --target-site A \
            2>>"$out.log" || { tail -5 "$out.log"; exit 1; }
        fi
        if [ $first = 1 ]; then
          for m in none zscore whitestripe nyul hcld-recon; do row "$out/evaluation/metrics.tsv" $m "$m"; done
          first=0
        fi
        row "$out/evaluation/metrics.tsv" hcld "hcld strength $strength, clip $clip, $mode, steps $steps"
      done
    done
  done
done
