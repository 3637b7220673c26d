#!/usr/bin/env python3
"""Run one command, measure its wall time and peak RSS, merge with its JSON.

The command must print a JSON object as its LAST non-empty stdout line (as
bench/pybids_index.py and the hcld `index_layout` example do). This script
prints that object with three fields added:

    "peak_rss_kb"   peak resident set size of the measured process (KiB)
    "wall_seconds"  wall time of the whole process (startup + import + work)
    "rss_method"    "gnu-time" (/usr/bin/time -v) or "rusage" (getrusage)

Methods (--method, default auto):
  gnu-time  run under `/usr/bin/time -v` and parse "Maximum resident set size".
  rusage    resource.getrusage(RUSAGE_CHILDREN).ru_maxrss after waiting for the
            single child (Linux reports KiB).
  auto      gnu-time if /usr/bin/time supports -v, else rusage.
Both work identically for the Rust binary and for Python.

Usage: measure.py [--method auto|gnu-time|rusage] [--label L] -- CMD [ARGS...]
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

GNU_TIME = "/usr/bin/time"


def gnu_time_works() -> bool:
    if not os.access(GNU_TIME, os.X_OK):
        return False
    try:
        r = subprocess.run([GNU_TIME, "-v", "true"], capture_output=True, text=True)
    except OSError:
        return False
    return r.returncode == 0 and "Maximum resident set size" in r.stderr


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=["auto", "gnu-time", "rusage"],
                    default=os.environ.get("RSS_METHOD", "auto"))
    ap.add_argument("--label", default=None,
                    help="added to the output object as \"label\"")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command given")

    method = args.method
    if method == "auto":
        method = "gnu-time" if gnu_time_works() else "rusage"
    elif method == "gnu-time" and not gnu_time_works():
        ap.error(f"{GNU_TIME} -v is not available (apt-get install time)")

    time_out = None
    if method == "gnu-time":
        fd, time_out = tempfile.mkstemp(prefix="measure-", suffix=".time")
        os.close(fd)
        full = [GNU_TIME, "-v", "-o", time_out, *cmd]
    else:
        full = cmd

    t0 = time.perf_counter()
    proc = subprocess.run(full, stdout=subprocess.PIPE)  # stderr passes through
    wall = time.perf_counter() - t0
    stdout = proc.stdout.decode("utf-8", "replace")

    if method == "gnu-time":
        with open(time_out, encoding="utf-8", errors="replace") as fh:
            report = fh.read()
        os.unlink(time_out)
        m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", report)
        if not m:
            sys.stderr.write(report)
            print("measure.py: could not parse /usr/bin/time output", file=sys.stderr)
            return 1
        rss_kb = int(m.group(1))
    else:
        rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    if proc.returncode != 0:
        sys.stdout.write(stdout)
        print(f"measure.py: command failed with exit code {proc.returncode}: "
              f"{' '.join(cmd)}", file=sys.stderr)
        return proc.returncode

    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    try:
        obj = json.loads(lines[-1])
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
    except (IndexError, ValueError) as exc:
        sys.stdout.write(stdout)
        print(f"measure.py: last stdout line of {cmd[0]} is not a JSON object "
              f"({exc})", file=sys.stderr)
        return 1

    if args.label is not None:
        obj["label"] = args.label
    obj["peak_rss_kb"] = rss_kb
    obj["wall_seconds"] = round(wall, 6)
    obj["rss_method"] = method
    print(json.dumps(obj), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
