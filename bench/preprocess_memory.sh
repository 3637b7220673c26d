#!/usr/bin/env bash
# bench/preprocess_memory.sh — peak memory and wall time of preprocessing one 1 mm 256³ T1w.
#
# The Siemens TrioTim scan (176×256×256, 1 mm) from ../shared/data/t1w is zero-padded to 256³ in
# x (nibabel, same world coordinates), then (a) the preprocessing chain alone
# (examples/preprocess_t1w.rs) and (b) the whole participant level on a one-subject BIDS dataset
# run under GNU time. Needs /usr/bin/time and a Python with nibabel (NIB_PYTHON, default python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHARED=${SHARED:-../shared/data/t1w}
PY=${NIB_PYTHON:-python3}
cargo build --release --quiet --bin hcld --example preprocess_t1w
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/bids/sub-01/anat"
"$PY" - "$SHARED/siemens-triotim3T_gsu-cabi_mprage1mm.nii.gz" "$TMP/bids/sub-01/anat/sub-01_T1w.nii.gz" <<'PY'
import sys, numpy as np, nibabel as nib
img = nib.load(sys.argv[1]); data = np.asanyarray(img.dataobj)
pad = 256 - data.shape[0]
out = np.zeros((256,) + data.shape[1:], dtype=data.dtype); out[pad // 2: pad // 2 + data.shape[0]] = data
affine = img.affine.copy(); affine[:3, 3] -= affine[:3, 0] * (pad // 2)
nib.save(nib.Nifti1Image(out, affine, img.header), sys.argv[2])
print("input", out.shape, out.dtype)
PY
echo '{"Name": "memory", "BIDSVersion": "1.10.0"}' > "$TMP/bids/dataset_description.json"
echo "# $(date -u +%F) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
/usr/bin/time -f "preprocessing chain (example): %e s wall, peak RSS %M KB" \
  target/release/examples/preprocess_t1w "$TMP/bids/sub-01/anat/sub-01_T1w.nii.gz" 2>&1 >/dev/null | tail -1
/usr/bin/time -f "hcld participant (read, preprocess, write all outputs): %e s wall, peak RSS %M KB" \
  target/release/hcld "$TMP/bids" "$TMP/out" participant --nprocs 2 2>&1 >/dev/null | tail -1
