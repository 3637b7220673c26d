#!/usr/bin/env python3
"""Markdown table of bench/model_vs_pytorch.sh results (JSON lines from bench/measure.py)."""

import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {(r["grid"], r["op"], r.get("impl", r.get("label"))): r for r in rows}
grids = list(dict.fromkeys(r["grid"] for r in rows))
ops = list(dict.fromkeys(r["op"] for r in rows))
print("| grid | operation | PyTorch s | flex s (×) | tch s (×) | peak RSS PyTorch / flex / tch (MiB) |")
print("|---|---|---|---|---|---|")


def cell(r, base):
    if r is None or r.get("failed"):
        return "failed"
    s = f"{r['median_s']:.2f}"
    if base and not base.get("failed"):
        s += f" ({r['median_s'] / base['median_s']:.2f}×)"
    return s


for g in grids:
    for op in ops:
        p = by.get((g, op, "pytorch"))
        f = by.get((g, op, "hcld-flex"))
        t = by.get((g, op, "hcld-tch"))
        rss = " / ".join(
            "–" if r is None or r.get("failed") else f"{r['peak_rss_kb'] / 1024:.0f}" for r in (p, f, t)
        )
        print(f"| {g} | {op} | {cell(p, None)} | {cell(f, p)} | {cell(t, p)} | {rss} |")
