#!/usr/bin/env python3
"""bench/compare_maps.py — how far, and in which direction, two methods move intensities.

Reads the piecewise-linear intensity maps hcld records in the template-space sidecars of a
derivatives folder (`hcld.Fit.IntensityMap` of HCLD in `intensity-map` mode, `hcld.Fit.Map` of
Nyúl) and prints, per image, each map's change (output − input) at a few intensities of the
preprocessed scale, then the share of images whose changes have the same sign and the mean ratio
of their sizes. A diagnostic for HCLD's change: is it a harmonisation in the right direction, and
how much of the way does it go (Nyúl's map, fitted to the target site's landmarks, as the yardstick)?

    python3 bench/compare_maps.py OUT_DIR [--site-column site] [--at 0.3 0.5 0.7]

OUT_DIR holds `participant --method hcld,nyul` outputs (hcld with `--output-mode intensity-map`)
and BIDS_DIR's participants.tsv is found through OUT_DIR/dataset_description.json's SourceDatasets
or given with --participants.
"""
import argparse
import bisect
import csv
import glob
import json
import os
import sys


def interp(a, xs, ys):
    """Piecewise-linear map at a (constant extrapolation of the end slopes, as hcld applies it)."""
    i = max(1, min(len(xs) - 1, bisect.bisect(xs, a)))
    t = (a - xs[i - 1]) / (xs[i] - xs[i - 1])
    return ys[i - 1] + t * (ys[i] - ys[i - 1])


def fitted_map(path, key):
    with open(path) as f:
        fit = json.load(f).get("hcld", {}).get("Fit", {})
    m = fit.get(key)
    return (m["From"], m["To"]) if m and m.get("Kind") == "PiecewiseLinear" else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--participants", help="participants.tsv of the BIDS dataset (site column)")
    ap.add_argument("--site-column", default="site")
    ap.add_argument("--at", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    args = ap.parse_args()
    sites = {}
    if args.participants:
        with open(args.participants) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                sites[row["participant_id"]] = row.get(args.site_column, "n/a")
    pattern = os.path.join(args.out, "sub-*", "**", "*space-*_desc-harmonized_T1w.json")
    rows, agree, total, ratios = [], 0, 0, []
    for h in sorted(glob.glob(pattern, recursive=True)):
        n = h.replace("_desc-harmonized_T1w.json", "_desc-nyul_T1w.json")
        hm, nm = fitted_map(h, "IntensityMap"), (fitted_map(n, "Map") if os.path.exists(n) else None)
        if hm is None or nm is None:
            continue
        sub = os.path.basename(h).split("_")[0]
        cells = []
        for a in args.at:
            dh, dn = interp(a, *hm) - a, interp(a, *nm) - a
            cells.append(f"{dh:+.3f} / {dn:+.3f}")
            if abs(dn) >= 0.01:  # Nyúl moves it: does HCLD move it the same way?
                total += 1
                agree += (dh > 0) == (dn > 0)
                ratios.append(dh / dn)
        rows.append((os.path.basename(h).split("_space-")[0], sites.get(sub, "n/a"), cells))
    if not rows:
        sys.exit(f"{args.out}: no image with both an HCLD intensity map and a Nyúl map")
    print("| image | site | " + " | ".join(f"change at {a} (HCLD / Nyúl)" for a in args.at) + " |")
    print("|---|---|" + "---|" * len(args.at))
    for name, site, cells in rows:
        print(f"| {name} | {site} | " + " | ".join(cells) + " |")
    if total:
        print(
            f"\nWhere Nyúl moves the intensity by 0.01 or more ({total} points): HCLD moves it the "
            f"same way at {agree} ({agree / total:.0%}); HCLD's change / Nyúl's: mean "
            f"{sum(ratios) / len(ratios):.2f}, median {sorted(ratios)[len(ratios) // 2]:.2f}"
        )


if __name__ == "__main__":
    main()
