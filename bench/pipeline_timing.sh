#!/usr/bin/env bash
# bench/pipeline_timing.sh — the README's flow on examples/multisite with the default `cpu` config:
#   1. group: preprocess the 4 images, train HCLD (the configuration's default training, or
#      EPOCHS_AE + EPOCHS_LDM epochs when set), pick site targets;
#      training time per epoch of each stage from the model's training summary;
#   2. participant, one job per subject into a fresh OUTPUT_DIR holding only the model (as a cluster
#      array would run them): preprocess + harmonise with HCLD, wall time and peak RSS (GNU time).
# Environment: EPOCHS_AE, EPOCHS_LDM (empty: the configuration's default), BACKEND (flex), FEATURES (cargo features, e.g. tch; run
# through scripts/with-libtorch.sh then), BENCH_DIR (a folder to keep; default a temporary one).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EPOCHS_AE=${EPOCHS_AE:-}
EPOCHS_LDM=${EPOCHS_LDM:-}
TRAINING=()
[ -n "$EPOCHS_AE" ] && TRAINING+=(--epochs-ae "$EPOCHS_AE")
[ -n "$EPOCHS_LDM" ] && TRAINING+=(--epochs-ldm "$EPOCHS_LDM")
BACKEND=${BACKEND:-flex}
cargo build --release --quiet --bin hcld ${FEATURES:+--features "$FEATURES"}
DIR=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$DIR"
HCLD=target/release/hcld
echo "# $(date -u +%F) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), backend $BACKEND"
/usr/bin/time -f "group (preprocess 4 images, train, targets, report): %e s wall, peak RSS %M KB" \
  "$HCLD" examples/multisite "$DIR/out" group --method hcld --backend "$BACKEND" \
  ${TRAINING[@]+"${TRAINING[@]}"} -w "$DIR/work" 2>&1 | tail -1
python3 - "$DIR/out/models" <<'PY'
import json, pathlib, sys
for cfg in sorted(pathlib.Path(sys.argv[1]).glob("hcld-*/config.json")):
    m = json.loads(cfg.read_text())
    t = m["training"]
    for stage in ("autoencoder", "diffusion"):
        r = t.get(stage)
    if not r:
        print(f"{stage}: not trained (pretrained weights {t.get('pretrained_autoencoder', '?')})")
        continue
        print(f"{stage}: {r['steps']} steps, {r['epochs']:.1f} epochs in {r['seconds']:.1f} s = "
              f"{r['seconds'] / max(r['epochs'], 1e-9):.1f} s per epoch of {sum(t['images_per_site'].values())} images "
              f"(loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}); {t['backend']}")
PY
for label in 01 02 03; do
  job="$DIR/participant-$label"
  rm -rf "$job"; mkdir -p "$job"; cp -r "$DIR/out/models" "$job/"
  n=$(find examples/multisite/sub-$label -name '*_T1w.nii.gz' | wc -l)
  /usr/bin/time -f "sub-$label ($n image(s)): preprocess + harmonise %e s wall, peak RSS %M KB" \
    "$HCLD" examples/multisite "$job" participant --participant-label "$label" --method hcld \
    --backend "$BACKEND" --nprocs 2 2>&1 | tail -1
done
grep -h '"Seconds"\|hcld in' "$DIR"/participant-*/logs/*.log 2>/dev/null | grep -o 'sub-[^ ]* [^ ]*: hcld in [0-9.]* s' || true
