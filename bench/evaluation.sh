#!/usr/bin/env bash
# bench/evaluation.sh — the evaluation of ../shared/design/evaluation.md at a CPU-friendly size,
# printing the Markdown tables docs/benchmarks.md records. Parameters are chosen on VALIDATION
# and reported on TEST: the two simulations use different seeds and different source scans
# (different brains), so a setting tuned on one is checked on anatomy and sites it never saw.
#   calibration  the validation sources with --site-effect 0 (no site effect): `none` must sit
#                inside the chance interval;
#   validation   hcld-simulate: VAL_SOURCES x SITES sites, SUBJECTS subjects (balanced design);
#   test         the same with TEST_SOURCES and TEST_SEED;
#   pairs        real pairs with a known answer: the Siemens Prisma scan without/with the
#                scanner's receive-bias correction (one acquisition), and the United Imaging
#                scan-rescan pair; each member is a site, the first is harmonised to the second's;
#   real         the multi-scanner scans of REAL_DATA, one site per scanner (no reference).
# For each: group (preprocess, fit Nyúl, train HCLD with CONFIG, site targets) -> participant
# (--method all) -> group --evaluate; then the TSV as Markdown.
# Environment: SETS ("calibration validation test pairs real"), SUBJECTS (48), SITES (4),
# VAL_SEED (1), TEST_SEED (2), CONFIG (cpu: the default, on the shipped autoencoder), EPOCHS_AE
# and EPOCHS_LDM (empty: the configuration's default training; set, they are passed as
# --epochs-ae / --epochs-ldm; the tables made with the `tiny` config used 10 and 20),
# DATA (../shared/data/t1w), REAL_DATA (= DATA), BENCH_DIR (default a temporary folder),
# EXTRA (more options for every hcld run, e.g. "--strength 0.1").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SETS=${SETS:-calibration validation test pairs real}
SUBJECTS=${SUBJECTS:-48}
SITES=${SITES:-4}
VAL_SEED=${VAL_SEED:-1}
TEST_SEED=${TEST_SEED:-2}
# shellcheck source=bench/training_args.sh
source bench/training_args.sh
DATA=${DATA:-../shared/data/t1w}
REAL_DATA=${REAL_DATA-$DATA}
EXTRA=${EXTRA:-}
# Four distinct brains each; no brain is in both sets (the two Prisma reconstructions and the two
# UIH runs are one brain each, so each pair stays on one side).
VAL_SOURCES="philips-intera3T_ixi-hh_IXI012-HH-1211_t1w2mm philips-intera3T_ixi-hh_IXI255-HH-1882_t1w2mm siemens-prismafit3T_iu-xa30_mprage2mm_prescannorm siemens-triotim3T_gsu-cabi_mprage1mm"
TEST_SOURCES="philips-intera3T_ixi-hh_IXI132-HH-1415_t1w2mm philips-elitionx3T_ganji_adnimprage1mm uih-umr770-3T_uih_t1gre-ir1mm_run-1 colin27-avg27_mni-philips1p5T_ch2_1mm"
cargo build --release --quiet --bin hcld --bin hcld-simulate
DIR=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$DIR/bin"
# Copies, so that a rebuild while the bench runs does not change the binary under it.
cp target/release/hcld target/release/hcld-simulate "$DIR/bin/"
HCLD=$DIR/bin/hcld
SIMULATE=$DIR/bin/hcld-simulate
echo "# $(date -u +%F) $(nproc) CPUs, ${TRAINING[*]}${EXTRA:+, $EXTRA}"

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

sources() { # NAMES -> paths
  local n
  for n in $1; do echo "$DATA/$n.nii.gz"; done
}

evaluate() { # BIDS_DIR OUT METHODS [hcld options...]
  local bids=$1 out=$2 methods=$3 t0
  shift 3
  t0=$(date +%s)
  # shellcheck disable=SC2086
  "$HCLD" "$bids" "$out" group --method $methods "${TRAINING[@]}" \
    -w "$out-work" "$@" $EXTRA 2>"$out-group.log" \
    || { tail -5 "$out-group.log"; exit 1; }
  # shellcheck disable=SC2086
  "$HCLD" "$bids" "$out" participant --method $methods -w "$out-work" "$@" $EXTRA \
    2>"$out-participant.log" || { tail -5 "$out-participant.log"; exit 1; }
  # shellcheck disable=SC2086
  "$HCLD" "$bids" "$out" group --method $methods "${TRAINING[@]}" \
    -w "$out-work" --evaluate "$@" $EXTRA 2>"$out-evaluate.log" \
    || { tail -5 "$out-evaluate.log"; exit 1; }
  echo "($(( $(date +%s) - t0 )) s for group + participant + group --evaluate)"
  markdown "$out/evaluation/metrics.tsv"
}

simulate() { # NAME SEED SOURCES [options...]
  local name=$1 seed=$2 src=$3
  shift 3
  rm -rf "${DIR:?}/$name" "$DIR/$name-out" "$DIR/$name-out-work"
  # shellcheck disable=SC2046
  "$SIMULATE" "$DIR/$name" --source $(sources "$src") --subjects "$SUBJECTS" \
    --sites "$SITES" --seed "$seed" "$@" 2>&1 | tail -1
}

site_table() { # SIM_DIR
  python3 -c "import sys; print(open(sys.argv[1]).read().strip())" "$1/sourcedata/ground-truth/sites.tsv" \
    | sed 's/\t/ | /g; s/^/| /; s/$/ |/' | sed '1a|---|---|---|---|---|---|---|---|---|---|'
}

for set in $SETS; do
  case $set in
  calibration)
    echo
    echo "## Calibration: no site effect ($SUBJECTS subjects x $SITES identical sites, seed $VAL_SEED, validation sources)"
    simulate calibration "$VAL_SEED" "$VAL_SOURCES" --site-effect 0
    evaluate "$DIR/calibration" "$DIR/calibration-out" "none zscore whitestripe nyul" --target-site A
    ;;
  validation | test)
    if [ "$set" = validation ]; then seed=$VAL_SEED src=$VAL_SOURCES; else seed=$TEST_SEED src=$TEST_SOURCES; fi
    echo
    echo "## ${set^}: $SUBJECTS subjects x $SITES sites (seed $seed) from: $src"
    simulate "$set" "$seed" "$src"
    site_table "$DIR/$set"
    evaluate "$DIR/$set" "$DIR/$set-out" all --target-site A
    ;;
  pairs)
    for pair in prisma uih; do
      if [ $pair = prisma ]; then
        # The corrected reconstruction is harmonised to the uncorrected one's site: its own
        # registration and mask are sound (the uncorrected one's are pulled by its bias, issue 21).
        a=siemens-prismafit3T_iu-xa30_mprage2mm_prescannorm b=siemens-prismafit3T_iu-xa30_mprage2mm_noprescannorm
        sa=PrismaNorm sb=PrismaRaw
      else
        a=uih-umr770-3T_uih_t1gre-ir1mm_run-1 b=uih-umr770-3T_uih_t1gre-ir1mm_run-2 sa=UIHscan sb=UIHrescan
      fi
      echo
      echo "## Real pair: $a (site $sa) harmonised to the site of $b ($sb)"
      rm -rf "${DIR:?}/pair-$pair" "$DIR/pair-$pair-out" "$DIR/pair-$pair-out-work"
      mkdir -p "$DIR/pair-$pair/sub-01/ses-1/anat" "$DIR/pair-$pair/sub-01/ses-2/anat"
      cp "$DATA/$a.nii.gz" "$DIR/pair-$pair/sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"
      cp "$DATA/$b.nii.gz" "$DIR/pair-$pair/sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz"
      printf '{"Name": "hcld bench: real pair %s", "BIDSVersion": "1.10.0"}\n' "$pair" \
        > "$DIR/pair-$pair/dataset_description.json"
      printf 'participant_id\nsub-01\n' > "$DIR/pair-$pair/participants.tsv"
      printf 'session_id\tsite\nses-1\t%s\nses-2\t%s\n' "$sa" "$sb" > "$DIR/pair-$pair/sub-01/sub-01_sessions.tsv"
      evaluate "$DIR/pair-$pair" "$DIR/pair-$pair-out" all --target-site "$sb"
    done
    ;;
  real)
    [ -n "$REAL_DATA" ] && [ -d "$REAL_DATA" ] || continue
    echo
    echo "## Real multi-scanner scans from $REAL_DATA (one site per scanner, no reference)"
    rm -rf "$DIR/real" "$DIR/real-out" "$DIR/real-out-work"
    python3 - "$REAL_DATA" "$DIR/real" <<'PY'
import json, pathlib, re, shutil, sys
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
dst.mkdir(parents=True)
(dst / "dataset_description.json").write_text(json.dumps({"Name": "hcld bench: real multi-scanner T1w", "BIDSVersion": "1.10.0"}))
# One participant per brain: the two Prisma reconstructions and the two UIH runs are sessions of
# one participant, so the subject-level classifier holds each brain out whole.
brains = {}
for f in sorted(src.glob("*.nii.gz")):
    brain = re.sub(r"_(noprescannorm|prescannorm|run-\d+)$", "", f.name[: -len(".nii.gz")])
    brains.setdefault(brain, []).append(f)
rows = ["participant_id\tsite"]
for i, (brain, files) in enumerate(sorted(brains.items()), 1):
    sub = f"{i:02d}"
    site = brain.split("_")[0].replace("-", "")
    rows.append(f"sub-{sub}\t{site}")
    for j, f in enumerate(files, 1):
        ses = f"ses-{j}/" if len(files) > 1 else ""
        anat = dst / f"sub-{sub}" / ses / "anat"
        anat.mkdir(parents=True)
        name = f"sub-{sub}_ses-{j}_T1w.nii.gz" if ses else f"sub-{sub}_T1w.nii.gz"
        shutil.copy(f, anat / name)
(dst / "participants.tsv").write_text("\n".join(rows) + "\n")
print(f"{len(rows) - 1} brains, {sum(map(len, brains.values()))} images: " + ", ".join(r.replace("\t", "=") for r in rows[1:]))
PY
    evaluate "$DIR/real" "$DIR/real-out" all
    ;;
  *) echo "unknown set '$set' (calibration validation test pairs real)" >&2; exit 64 ;;
  esac
done
