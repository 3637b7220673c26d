#!/usr/bin/env python3
"""Compares two hcld OUTPUT_DIRs byte for byte, as a refactor must leave them.

    python3 scripts/compare_derivatives.py BEFORE AFTER

Run logs (`logs/`), lock files (`.hcld/`) and the working directory are not outputs and are
skipped. Every other file must be identical, except that in the HTML reports durations
("in 1.2 s", "1.2 s per image") are masked, as they are measured, not computed. Prints one line
per difference and exits 1 if there is any.
"""
import os
import re
import sys

SKIP_DIRS = {"logs", ".hcld"}
DURATION = re.compile(rb"\d+(\.\d+)? ?(s|ms|min)\b")


def files(root):
    out = set()
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if not (d == root and x in SKIP_DIRS)]
        for n in names:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def main():
    before, after = sys.argv[1], sys.argv[2]
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
        if p.endswith(".html"):
            x, y = DURATION.sub(b"<t>", x), DURATION.sub(b"<t>", y)
        if x != y:
            print(f"differs: {p}")
            bad += 1
        else:
            same += 1
    print(f"{same} files identical, {bad} differences")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
