"""Side-by-side affine registration to the template: hcld vs ANTsPy, on the same real scans.

Usage (from bench/registration_vs_ants.sh): python registration_vs_ants.py HCLD_OUT_DIR HCLD_JSONL T1w...

hcld's side was run by `examples/register_to_template.rs`, which wrote each registered image on the
2 mm template grid and one JSON line with the registration wall time. Here ANTsPy registers the same
scans to the same fixed image (hcld's embedded full-head template, so both solve the same problem),
`ants.registration(type_of_transform="Affine")` with default settings, and its result is resampled
onto the same grid. Both are then scored identically, inside the ICBM 2009a brain mask:
  - NCC: Pearson correlation of the registered scan with the ICBM 2009a T1w;
  - WM Dice: Otsu threshold of the registered scan in the brain mask vs template WM probability > 0.5.
It also checks that ANTsPy applying hcld's own transform file reproduces hcld's registered image
(the transform conventions agree).
"""
import json
import os
import sys
import time

import ants
import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

HERE = os.path.dirname(os.path.abspath(__file__))
TPL = os.path.join(HERE, "..", "data", "template")


def otsu(values):
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)]


def main():
    out_dir, jsonl, *inputs = sys.argv[1:]
    head_path = os.path.join(TPL, "tpl-MNI152NLin2009aSym_res-02_desc-head_T1w.nii.gz")
    head = nib.load(head_path)
    t1 = resample_from_to(nib.load(os.path.join(TPL, "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")), head, order=1).get_fdata()
    brain = resample_from_to(nib.load(os.path.join(TPL, "mni_icbm152_brain_mask_1mm_thr0.2.nii.gz")), head, order=1).get_fdata() > 0.5
    wm = resample_from_to(nib.load(os.path.join(TPL, "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")), head, order=1).get_fdata() > 127.5

    def score(img):
        a, b = img[brain], t1[brain]
        a, b = a - a.mean(), b - b.mean()
        ncc = float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
        seg = img > otsu(img[brain])
        seg &= brain
        dice = float(2 * (seg & wm).sum() / (seg.sum() + wm.sum()))
        return ncc, dice

    hcld = {}
    for line in open(jsonl):
        d = json.loads(line)
        hcld[d["file"]] = d
    fixed = ants.image_read(head_path)
    rows = []
    for path in inputs:
        name = os.path.basename(path).replace(".nii.gz", "")
        moving = ants.image_read(path)
        start = time.time()
        reg = ants.registration(fixed=fixed, moving=moving, type_of_transform="Affine")
        ants_seconds = time.time() - start
        warped = ants.apply_transforms(fixed=fixed, moving=moving, transformlist=reg["fwdtransforms"])
        ants_img = warped.numpy()
        hcld_img = nib.load(os.path.join(out_dir, f"{name}_hcld.nii.gz")).get_fdata()
        # ANTsPy applying hcld's ITK transform file must reproduce hcld's own resampling.
        via_ants = ants.apply_transforms(
            fixed=fixed, moving=moving, transformlist=[os.path.join(out_dir, f"{name}_hcld.txt")]
        ).numpy()
        agree = float(np.corrcoef(via_ants[brain], hcld_img[brain])[0, 1])
        h_ncc, h_dice = score(hcld_img)
        a_ncc, a_dice = score(ants_img)
        rows.append((name, hcld[name]["seconds"], ants_seconds, h_ncc, a_ncc, h_dice, a_dice, agree))
    print("| scan | hcld s | ANTsPy s | speed-up | NCC hcld | NCC ANTsPy | WM Dice hcld | WM Dice ANTsPy | hcld xfm applied by ANTsPy (r) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, hs, as_, hn, an, hd, ad, ag in rows:
        print(f"| {n} | {hs:.2f} | {as_:.2f} | {as_ / hs:.1f}× | {hn:.3f} | {an:.3f} | {hd:.3f} | {ad:.3f} | {ag:.4f} |")
    r = np.array([row[1:] for row in rows])
    print(f"| **mean** | {r[:, 0].mean():.2f} | {r[:, 1].mean():.2f} | {r[:, 1].sum() / r[:, 0].sum():.1f}× | {r[:, 2].mean():.3f} | {r[:, 3].mean():.3f} | {r[:, 4].mean():.3f} | {r[:, 5].mean():.3f} | {r[:, 6].min():.4f} (min) |")


if __name__ == "__main__":
    main()
