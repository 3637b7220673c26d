#!/usr/bin/env bash
# Runs a command with LibTorch available for hcld's `tch` feature (burn-tch / torch-sys 0.22),
# offline-friendly: LibTorch comes from the PyPI wheel `torch==2.9.0` (the version torch-sys 0.22
# is built against; newer ones fail to build), installed into a venv that is created once.
#
#   bash scripts/with-libtorch.sh cargo test --release --workspace --features tch
#   bash scripts/with-libtorch.sh cargo build --release --features tch
#
# HCLD_TORCH_VENV chooses the venv (default: $TMPDIR/hcld-torch-venv). The PyPI wheel brings its
# CUDA runtime wheels (~6.7 GB installed); the same build then runs on CPU or, with --device cuda,
# on NVIDIA GPUs. After changing the torch version, run `cargo clean -p torch-sys -p burn-tch`.
set -euo pipefail
VENV="${HCLD_TORCH_VENV:-${TMPDIR:-/tmp}/hcld-torch-venv}"
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.9.0')" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==2.9.0"
fi
TORCH_LIB="$("$VENV/bin/python" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")"
# torch-sys finds LibTorch through the venv's Python at build time...
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
export LIBTORCH_USE_PYTORCH=1
# ...and the dynamic loader needs its libraries at run time.
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$@"
