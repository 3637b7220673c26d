#!/usr/bin/env python3
"""Summarise bench/layout_vs_pybids.sh measurements as a Markdown table.

Input: a JSONL file of timed runs as written by bench/measure.py, each with a
"label" of "hcld", "pybids" or "pybids-validate". Warm-up runs must NOT be in
this file. Per label it reports the median over runs of seconds_index,
seconds_query and wall_seconds, and the maximum peak_rss_kb.

Usage: report.py RESULTS.jsonl --files N --subjects N [--hcld-version V]
"""

import argparse
import json
import math
import statistics
import sys

ROWS = [
    # label, tool name shown, note
    ("hcld", "hcld (`index_layout` example)"),
    ("pybids", "pybids `BIDSLayout(validate=False)`"),
    ("pybids-validate", "pybids `BIDSLayout(validate=True)`"),
]


def fmt_s(x: float) -> str:
    """Seconds with ~3 significant digits, never in exponent notation."""
    if x >= 100:
        return f"{x:.0f}"
    if x <= 0:
        return "0"
    decimals = min(6, max(0, 2 - math.floor(math.log10(x))))
    return f"{x:.{decimals}f}"


def fmt_ratio(num, den) -> str:
    if num is None or den is None or den <= 0:
        return "n/a"
    r = num / den
    return f"{r:.0f}×" if r >= 100 else f"{r:.1f}×"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--files", type=int, required=True)
    ap.add_argument("--subjects", type=int, required=True)
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--hcld-version", default="?")
    args = ap.parse_args()

    runs: dict[str, list[dict]] = {}
    with open(args.results, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                obj = json.loads(line)
                runs.setdefault(obj["label"], []).append(obj)

    summary = {}
    for label, _ in ROWS:
        rs = runs.get(label)
        if not rs:
            continue
        summary[label] = {
            "runs": len(rs),
            "version": rs[0].get("version") or (args.hcld_version if label == "hcld" else "?"),
            "index": statistics.median(r["seconds_index"] for r in rs),
            "query": statistics.median(r["seconds_query"] for r in rs),
            "wall": statistics.median(r["wall_seconds"] for r in rs),
            "rss_mb": max(r["peak_rss_kb"] for r in rs) / 1024.0,
            "counts": {(r["n_subjects"], r["n_sessions"], r["n_t1w"]) for r in rs},
            "rss_method": rs[0].get("rss_method", "?"),
        }

    h = summary.get("hcld")
    out = []
    out.append("| Tool | Version | Files | Runs | Index time (median, s) "
               "| Query time (median, s) | Process wall (median, s) "
               "| Peak RSS (MiB) | pybids/hcld (index) | pybids/hcld (wall) |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, name in ROWS:
        s = summary.get(label)
        if s is None:
            continue
        if h is None:
            r_index = r_wall = "n/a (hcld skipped)"
        elif label == "hcld":
            r_index = r_wall = "1.0×"
        else:
            r_index = fmt_ratio(s["index"], h["index"])
            r_wall = fmt_ratio(s["wall"], h["wall"])
        version = args.hcld_version if label == "hcld" else s["version"]
        out.append(
            f"| {name} | {version} | {args.files} | {s['runs']} "
            f"| {fmt_s(s['index'])} | {fmt_s(s['query'])} | {fmt_s(s['wall'])} "
            f"| {s['rss_mb']:.0f} | {r_index} | {r_wall} |")
    print("\n".join(out))

    # Cross-check that every tool found the same thing.
    expected = (args.subjects, args.sessions, 2 * args.subjects)
    print()
    problems = []
    for label, s in summary.items():
        for c in s["counts"]:
            if c != expected:
                problems.append(f"{label}: n_subjects={c[0]} n_sessions={c[1]} "
                                f"n_t1w={c[2]} (expected {expected[0]}/{expected[1]}/"
                                f"{expected[2]})")
    if problems:
        print("**WARNING: result counts differ from the generated tree:**")
        for p in problems:
            print(f"- {p}")
    else:
        print(f"All tools found {expected[0]} subjects, {expected[1]} distinct "
              f"session labels and {expected[2]} T1w images.")
    methods = sorted({s["rss_method"] for s in summary.values()})
    print(f"Peak RSS measured with: {', '.join(methods)} "
          "(whole process, incl. interpreter/imports; max over timed runs).")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
