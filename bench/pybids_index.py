#!/usr/bin/env python3
"""Time pybids indexing and a few typical queries on a BIDS tree.

Run with the benchmark venv's python (see bench/layout_vs_pybids.sh).
Prints ONE JSON line on stdout:

    {"tool": "pybids", "version": "...", "validate": false,
     "seconds_import": f, "seconds_index": f, "seconds_query": f,
     "n_subjects": n, "n_sessions": n, "n_t1w": n}

seconds_index  = BIDSLayout(root, validate=...) construction (default
                 indexer, i.e. JSON sidecar metadata IS indexed, in-memory DB).
seconds_query  = get_subjects() + get_sessions()
                 + get(suffix='T1w', datatype='anat', extension=['.nii', '.nii.gz']).
n_sessions     = number of distinct session labels (pybids get_sessions()).

Usage: pybids_index.py ROOT [--validate]
"""

import argparse
import json
import sys
import time

t0 = time.perf_counter()
import bids  # noqa: E402
from bids import BIDSLayout  # noqa: E402

seconds_import = time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--validate", action="store_true",
                    help="BIDSLayout(validate=True) (default: validate=False)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    layout = BIDSLayout(args.root, validate=args.validate)
    t1 = time.perf_counter()
    subjects = layout.get_subjects()
    sessions = layout.get_sessions()
    t1w = layout.get(suffix="T1w", datatype="anat", extension=[".nii", ".nii.gz"])
    t2 = time.perf_counter()

    print(json.dumps({
        "tool": "pybids",
        "version": bids.__version__,
        "validate": args.validate,
        "seconds_import": round(seconds_import, 6),
        "seconds_index": round(t1 - t0, 6),
        "seconds_query": round(t2 - t1, 6),
        "n_subjects": len(subjects),
        "n_sessions": len(sessions),
        "n_t1w": len(t1w),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
