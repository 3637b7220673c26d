#!/usr/bin/env bash
# bench/evaluation.sh — the whole evaluation of issue 7 at a CPU-friendly size, printing the metric
# tables (Markdown) that docs/benchmarks.md records:
#   A. simulated: hcld-simulate renders the 4 real fixture scans as SUBJECTS subjects at SITES sites;
#   B. real: the multi-scanner T1w volumes of ../shared/data/t1w (one site per scanner).
# For each: group (preprocess, fit Nyúl, train HCLD with CONFIG for EPOCHS_AE + EPOCHS_LDM epochs,
# site targets) → participant (--method all) → group --evaluate; then the TSV as a Markdown table.
# Environment: SUBJECTS (8), SITES (4), SEED (0), CONFIG (tiny), EPOCHS_AE (10), EPOCHS_LDM (20),
# REAL_DATA (../shared/data/t1w; empty to skip B), BENCH_DIR (default a temporary folder).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SUBJECTS=${SUBJECTS:-8}
SITES=${SITES:-4}
SEED=${SEED:-0}
CONFIG=${CONFIG:-tiny}
EPOCHS_AE=${EPOCHS_AE:-10}
EPOCHS_LDM=${EPOCHS_LDM:-20}
REAL_DATA=${REAL_DATA-../shared/data/t1w}
cargo build --release --quiet --bin hcld --bin hcld-simulate
DIR=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$DIR"
HCLD=target/release/hcld
echo "# $(date -u +%F) $(nproc) CPUs, config $CONFIG, $EPOCHS_AE + $EPOCHS_LDM epochs"

markdown() {
  python3 - "$1" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter="\t"))
print("| " + " | ".join(rows[0]) + " |")
print("|" + "---|" * len(rows[0]))
for r in rows[1:]:
    print("| " + " | ".join(r) + " |")
PY
}

evaluate() { # BIDS_DIR OUT
  local bids=$1 out=$2 t0
  t0=$(date +%s)
  "$HCLD" "$bids" "$out" group --method all --config "$CONFIG" --epochs-ae "$EPOCHS_AE" \
    --epochs-ldm "$EPOCHS_LDM" -w "$out-work" 2>"$out-group.log" || { tail -5 "$out-group.log"; exit 1; }
  "$HCLD" "$bids" "$out" participant --method all -w "$out-work" 2>"$out-participant.log" \
    || { tail -5 "$out-participant.log"; exit 1; }
  "$HCLD" "$bids" "$out" group --method all --config "$CONFIG" --epochs-ae "$EPOCHS_AE" \
    --epochs-ldm "$EPOCHS_LDM" -w "$out-work" --evaluate 2>"$out-evaluate.log" \
    || { tail -5 "$out-evaluate.log"; exit 1; }
  echo "($(( $(date +%s) - t0 )) s for group + participant + group --evaluate)"
  markdown "$out/evaluation/metrics.tsv"
}

echo
echo "## A. Simulated: $SUBJECTS subjects x $SITES sites (seed $SEED) from tests/data/t1w"
rm -rf "$DIR/sim"
target/release/hcld-simulate "$DIR/sim" --source tests/data/t1w/*.nii.gz --subjects "$SUBJECTS" \
  --sites "$SITES" --seed "$SEED" 2>&1 | tail -1
python3 -c "import sys; print(open(sys.argv[1]).read().strip())" "$DIR/sim/sourcedata/ground-truth/sites.tsv" \
  | sed 's/\t/ | /g; s/^/| /; s/$/ |/' | sed '1a|---|---|---|---|---|---|---|---|---|---|'
evaluate "$DIR/sim" "$DIR/sim-out"

if [ -n "$REAL_DATA" ] && [ -d "$REAL_DATA" ]; then
  echo
  echo "## B. Real multi-scanner scans from $REAL_DATA (one site per scanner, no ground truth)"
  rm -rf "$DIR/real"
  python3 - "$REAL_DATA" "$DIR/real" <<'PY'
import json, pathlib, shutil, sys
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
dst.mkdir(parents=True)
(dst / "dataset_description.json").write_text(json.dumps({"Name": "hcld bench: real multi-scanner T1w", "BIDSVersion": "1.10.0"}))
rows = ["participant_id\tsite"]
for i, f in enumerate(sorted(src.glob("*.nii.gz")), 1):
    site = f.name.split("_")[0].replace("-", "")
    sub = f"{i:02d}"
    anat = dst / f"sub-{sub}" / "anat"
    anat.mkdir(parents=True)
    shutil.copy(f, anat / f"sub-{sub}_T1w.nii.gz")
    rows.append(f"sub-{sub}\t{site}")
(dst / "participants.tsv").write_text("\n".join(rows) + "\n")
print(f"{len(rows) - 1} images: " + ", ".join(r.replace("\t", "=") for r in rows[1:]))
PY
  evaluate "$DIR/real" "$DIR/real-out"
fi
