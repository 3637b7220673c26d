#!/usr/bin/env python3
"""Compares two hcld OUTPUT_DIRs byte for byte, as a refactor must leave them.

    python3 scripts/compare_derivatives.py BEFORE AFTER [BEFORE_ROOT AFTER_ROOT]

Run logs (`logs/`), lock files (`.hcld/`) and the working directory are not outputs and are
skipped. Every other file must be identical, except for what is measured or placed, not
computed, which is masked: durations in the HTML reports ("in 1.2 s"), the `"seconds"` a
training stage took (in a model's config.json), and the path of OUTPUT_DIR itself (reports name
files by their absolute path), and the folder that held each run's inputs when given (BEFORE_ROOT,
AFTER_ROOT: a bench's temporary folder, whose path the sidecars' BIDS_DIR URLs and the reports
name). Prints one line per difference and exits 1 if there is any.
"""
import os
import re
import sys

SKIP_DIRS = {"logs", ".hcld"}
DURATION = re.compile(rb"\d+(\.\d+)? ?(s|ms|min)\b")
SECONDS = re.compile(rb'"seconds": [0-9.eE+-]+')


def files(root):
    out = set()
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if not (d == root and x in SKIP_DIRS)]
        for n in names:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def main():
    before, after = sys.argv[1], sys.argv[2]
    roots = [(os.path.abspath(before), os.path.abspath(after))]
    if len(sys.argv) == 5:
        roots.append((os.path.abspath(sys.argv[3]), os.path.abspath(sys.argv[4])))
    a, b = files(before), files(after)
    bad = 0
    for p in sorted(a - b):
        print(f"only in {before}: {p}")
        bad += 1
    for p in sorted(b - a):
        print(f"only in {after}: {p}")
        bad += 1
    same = 0
    for p in sorted(a & b):
        x = open(os.path.join(before, p), "rb").read()
        y = open(os.path.join(after, p), "rb").read()
        if p.endswith((".html", ".json", ".tsv", ".csv", ".txt", ".md")):
            for k, (rb, ra) in enumerate(roots):
                x = x.replace(rb.encode(), b"<ROOT%d>" % k)
                y = y.replace(ra.encode(), b"<ROOT%d>" % k)
        if p.endswith(".html"):
            x, y = DURATION.sub(b"<t>", x), DURATION.sub(b"<t>", y)
        if p.endswith("config.json"):
            x, y = SECONDS.sub(b"<t>", x), SECONDS.sub(b"<t>", y)
        if x != y:
            print(f"differs: {p}")
            bad += 1
        else:
            same += 1
    print(f"{same} files identical, {bad} differences")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
