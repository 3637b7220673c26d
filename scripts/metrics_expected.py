#!/usr/bin/env python3
"""Reference values for hcld's metric unit tests (src/metrics), from SciPy and scikit-image.

Writes, under tests/data/metrics/:
- ssim-reference.nii.gz: a 40x40x40 float32 crop of the real Siemens Prisma T1w fixture
  (tests/data/t1w/siemens-prismafit3T_iu-xa30_mprage2mm_noprescannorm.nii.gz), scaled to [0, 1];
- ssim-degraded.nii.gz: the same crop blurred (Gaussian sigma 0.8 voxel), gamma 0.9, plus seeded
  Gaussian noise (sd 0.03), as float32;
- expected.json: scikit-image's structural_similarity (3D, gaussian_weights=True, sigma=1.5,
  with and without use_sample_covariance, data_range of the reference) and
  peak_signal_noise_ratio of the two, and scipy.stats.wasserstein_distance on four sample pairs.

Run from the repository root with numpy, scipy, scikit-image and nibabel installed:
    python3 scripts/metrics_expected.py
Deterministic: a fixed seed, and every sample is float32-exact so Rust reads the same numbers.
"""

import json
import pathlib

import nibabel as nib
import numpy as np
import scipy
import scipy.ndimage
import scipy.stats
import skimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "metrics"
SOURCE = ROOT / "tests/data/t1w/siemens-prismafit3T_iu-xa30_mprage2mm_noprescannorm.nii.gz"


def save(data, path):
    img = nib.Nifti1Image(data.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    img.header.set_xyzt_units("mm")
    # gzip mtime 0 keeps the file byte-identical across runs.
    raw = img.to_bytes()
    import gzip

    path.write_bytes(gzip.compress(raw, mtime=0))


def f32_list(a):
    return [float(v) for v in np.asarray(a, dtype=np.float32).ravel()]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    src = nib.load(SOURCE)
    vol = np.asarray(src.dataobj, dtype=np.float64)
    c = [s // 2 for s in vol.shape]
    crop = vol[c[0] - 20 : c[0] + 20, c[1] - 20 : c[1] + 20, c[2] - 20 : c[2] + 20]
    ref = (crop / crop.max()).astype(np.float32)
    rng = np.random.default_rng(20261205)
    deg = scipy.ndimage.gaussian_filter(ref.astype(np.float64), 0.8) ** 0.9
    deg = (deg + rng.normal(0.0, 0.03, deg.shape)).astype(np.float32)
    save(ref, OUT / "ssim-reference.nii.gz")
    save(deg, OUT / "ssim-degraded.nii.gz")
    # Read back, so the numbers are those of the files.
    a = np.asarray(nib.load(OUT / "ssim-reference.nii.gz").dataobj, dtype=np.float64)
    b = np.asarray(nib.load(OUT / "ssim-degraded.nii.gz").dataobj, dtype=np.float64)
    data_range = float(a.max() - a.min())
    common = dict(gaussian_weights=True, sigma=1.5, data_range=data_range)
    ssim_pop = structural_similarity(a, b, use_sample_covariance=False, **common)
    ssim_sample = structural_similarity(a, b, use_sample_covariance=True, **common)
    psnr = peak_signal_noise_ratio(a, b, data_range=data_range)

    w_cases = []

    def w(name, x, y):
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.float32)
        d = scipy.stats.wasserstein_distance(x.astype(np.float64), y.astype(np.float64))
        w_cases.append({"name": name, "a": f32_list(x), "b": f32_list(y), "scipy": float(d)})

    w("small", [0, 1, 3], [5, 6, 8])
    w("unequal sizes, ties", [0, 1], [0, 0, 4])
    w("normal vs gamma", rng.normal(0.5, 0.2, 1000), rng.gamma(2.0, 0.25, 1500))
    w("T1w crop vs degraded (every 16th voxel)", a.ravel()[::16], b.ravel()[::17])

    expected = {
        "generated_by": "scripts/metrics_expected.py",
        "versions": {
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-image": skimage.__version__,
            "nibabel": nib.__version__,
        },
        "ssim": {
            "call": "structural_similarity(a, b, gaussian_weights=True, sigma=1.5, data_range=data_range, use_sample_covariance=...)",
            "shape": list(a.shape),
            "data_range": data_range,
            "population": float(ssim_pop),
            "sample": float(ssim_sample),
            "psnr": float(psnr),
        },
        "wasserstein": w_cases,
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"SSIM {ssim_pop:.6f} (sample cov {ssim_sample:.6f}), PSNR {psnr:.4f} dB")
    for case in w_cases:
        print(f"W1 {case['name']}: {case['scipy']:.9f}")


if __name__ == "__main__":
    main()
