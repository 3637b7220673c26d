#!/usr/bin/env bash
# bench/model_vs_pytorch.sh — the HCLD networks (reference architecture, untrained) in PyTorch +
# MONAI 1.6.1 on the CPU versus hcld with burn's flex and tch backends, one process per
# (implementation, grid, operation) so each peak RSS belongs to one operation. Grids: `cpu`
# (96×112×96, 2 mm) and `reference` (192×192×64). Operations: encode, decode, one UNet call, a
# full harmonisation (2 encodes + 30 + 10 UNet calls + 1 decode), one training step per stage.
# Prints a markdown table (medians, ratios to PyTorch, peak RSS) for docs/benchmarks.md.
#
#   bash bench/model_vs_pytorch.sh [GRID ...]      (default: cpu reference)
#
# PyTorch comes from a venv made from bench/requirements-torch.txt (TORCH_VENV, default
# $TMPDIR/hcld-torch-venv, shared with scripts/with-libtorch.sh, which the tch build uses).
# RUNS (default 3) timed runs after one warm-up for encode/decode/UNet; harmonise and the training
# steps (tens of seconds to minutes each at the reference grid) run RUNS_SLOW (default 1) times
# without warm-up.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
GRIDS=("$@")
[ ${#GRIDS[@]} -gt 0 ] || GRIDS=(cpu reference)
RUNS=${RUNS:-3}
RUNS_SLOW=${RUNS_SLOW:-1}
export HCLD_TORCH_VENV="${TORCH_VENV:-${TMPDIR:-/tmp}/hcld-torch-venv}"
[ -x "$HCLD_TORCH_VENV/bin/python" ] || python3 -m venv "$HCLD_TORCH_VENV"
"$HCLD_TORCH_VENV/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements-torch.txt
PY="$HCLD_TORCH_VENV/bin/python"

# One binary with both backends.
bash scripts/with-libtorch.sh cargo build --release --quiet --features tch --example model_bench
BIN=target/release/examples/model_bench
TORCH_LIB="$("$PY" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "# $(date -u +%F) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), torch $("$PY" -c 'import torch; print(torch.__version__, torch.get_num_threads(), "threads")')" >&2
for grid in "${GRIDS[@]}"; do
  for op in encode decode unet harmonise train-ae train-ldm; do
    runs=$RUNS warmup=1
    case $op in harmonise|train-*) runs=$RUNS_SLOW warmup=0 ;; esac
    for impl in pytorch flex tch; do
      if [ "$impl" = pytorch ]; then
        cmd=("$PY" bench/model_pytorch.py)
      else
        cmd=("$BIN" --backend "$impl")
      fi
      echo "$impl $grid $op" >&2
      python3 bench/measure.py --label "$impl" -- "${cmd[@]}" --grid "$grid" --op "$op" --runs "$runs" --warmup "$warmup" \
        >> "$OUT/results.jsonl" || echo "{\"impl\": \"$impl\", \"grid\": \"$grid\", \"op\": \"$op\", \"failed\": true}" >> "$OUT/results.jsonl"
    done
  done
done
cp "$OUT/results.jsonl" "${RESULTS:-/tmp/hcld-model-bench.jsonl}"
python3 bench/model_report.py "$OUT/results.jsonl"
