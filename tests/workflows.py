#!/usr/bin/env python3
"""The Snakemake workflow gives the same derivatives as the binary run by hand (issue 8).

Runs, on examples/multisite with the tiny HCLD config:
  by hand:    hcld BIDS OUT group; hcld BIDS OUT participant; hcld BIDS OUT group
  snakemake:  snakemake -s workflows/snakemake/Snakefile --cores 2 (one participant job per subject)
then compares the two OUTPUT_DIRs file by file: the same paths, and the same bytes for every file
but the HTML reports and run logs (named by start time; they hold timings), and JSON files whose only
differences are wall-clock figures (a model's training seconds).
Also runs the SLURM array script for each task id with a stand-in `apptainer` that runs the same
binary, and checks it too gives the same derivatives.

  python3 tests/workflows.py --hcld target/release/hcld --scratch /tmp/wf
Needs `snakemake` on PATH. Exit 0 when everything matches; otherwise prints the differences.
"""

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIDS = REPO / "examples" / "multisite"
ARGS = ["--method", "all", "--config", "tiny"]
# Files whose bytes may differ between two correct runs: the reports embed run times and logs.
VOLATILE_SUFFIXES = (".html",)
# Run logs are named by start time and process; each run must have written some.
LOG_DIR = "logs"
# JSON keys holding wall-clock figures (a model's training times): compared for presence only.
VOLATILE_JSON_KEYS = {"seconds"}


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    t0 = time.time()
    subprocess.run([str(c) for c in cmd], check=True, **kw)
    print(f"  ({time.time() - t0:.1f} s)", flush=True)


def by_hand(hcld, out, work):
    for level in ["group", "participant", "group"]:
        run([hcld, BIDS, out, level, "-w", work, *ARGS], stderr=subprocess.DEVNULL)


def by_snakemake(hcld, out, work):
    run(
        [
            "snakemake", "-s", REPO / "workflows" / "snakemake" / "Snakefile",
            "--cores", "2", "--quiet", "rules",
            "--config", f"bids_dir={BIDS}", f"output_dir={out}", f"work_dir={work}",
            f"hcld={hcld}", "args=" + " ".join(ARGS),
        ],
        # Snakemake keeps its own state (.snakemake/) in its working directory: not the repo.
        cwd=out.parent,
    )


def by_slurm(hcld, out, work, scratch):
    """The SLURM array script, task by task, with `apptainer run ... IMAGE ARGS` standing in."""
    shim = scratch / "shim"
    shim.mkdir(parents=True, exist_ok=True)
    apptainer = shim / "apptainer"
    # Drops apptainer's own options and the image, then runs the host binary with the rest.
    apptainer.write_text(
        "#!/bin/sh\n"
        "[ \"$1\" = run ] || exit 2; shift\n"
        "while [ $# -gt 0 ]; do case \"$1\" in\n"
        "  -B|--bind) shift 2;; --cleanenv|--nv|--containall) shift;;\n"
        "  *.sif) shift; break;; *) echo \"apptainer shim: unexpected $1\" >&2; exit 2;; esac; done\n"
        f"exec {hcld} \"$@\"\n"
    )
    apptainer.chmod(0o755)
    env = dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}", HCLD_SIF=str(scratch / "hcld.sif"),
               BIDS_DIR=str(BIDS), OUTPUT_DIR=str(out), WORK_DIR=str(work),
               HCLD_ARGS=" ".join(ARGS))
    script = REPO / "workflows" / "slurm" / "hcld.sbatch"
    run(["bash", script, "group"], env=env, stderr=subprocess.DEVNULL)
    n = len([p for p in BIDS.iterdir() if p.is_dir() and p.name.startswith("sub-")])
    for task in range(1, n + 1):
        run(["bash", script, "participant"], env=dict(env, SLURM_ARRAY_TASK_ID=str(task)),
            stderr=subprocess.DEVNULL)
    run(["bash", script, "group"], env=env, stderr=subprocess.DEVNULL)


def files(root):
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] != LOG_DIR
    )


def without_volatile(value):
    """A JSON value with the wall-clock keys replaced by a marker."""
    if isinstance(value, dict):
        return {
            k: ("<volatile>" if k in VOLATILE_JSON_KEYS else without_volatile(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def same_file(a, b):
    if filecmp.cmp(a, b, shallow=False):
        return True
    if a.suffix == ".json":
        # Only wall-clock figures may differ; everything else must be equal.
        return without_volatile(json.loads(a.read_text())) == without_volatile(
            json.loads(b.read_text())
        )
    return False


def compare(a, b):
    """Lists how the trees a and b differ (empty when they hold the same derivatives)."""
    fa, fb = files(a), files(b)
    problems = [f"{root}: no run log in {LOG_DIR}/" for root in (a, b)
                if not any((root / LOG_DIR).glob("hcld_*.log"))]
    problems += [f"only in {a}: {p}" for p in sorted(set(fa) - set(fb))]
    problems += [f"only in {b}: {p}" for p in sorted(set(fb) - set(fa))]
    same = sorted(set(fa) & set(fb))
    compared = 0
    for p in same:
        if p.suffix in VOLATILE_SUFFIXES:
            continue
        compared += 1
        if not same_file(a / p, b / p):
            problems.append(f"differs: {p}")
    print(f"compared {compared} files byte by byte ({len(same) - compared} HTML reports skipped)")
    if compared < 20:
        problems.append(f"only {compared} files compared: the runs wrote almost nothing")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hcld", required=True, type=Path)
    ap.add_argument("--scratch", required=True, type=Path)
    opts = ap.parse_args()
    hcld = opts.hcld.resolve()
    scratch = opts.scratch.resolve()
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    hand, snake, slurm = scratch / "by-hand", scratch / "by-snakemake", scratch / "by-slurm"
    by_hand(hcld, hand, scratch / "hand-work")
    by_snakemake(hcld, snake, scratch / "snakemake-work")
    by_slurm(hcld, slurm, scratch / "slurm-work", scratch)
    problems = []
    for name, other in [("snakemake", snake), ("slurm", slurm)]:
        found = compare(hand, other)
        problems += [f"{name}: {p}" for p in found]
    for p in problems:
        print(p)
    if problems:
        sys.exit(f"{len(problems)} differences between the workflows and the binary by hand")
    print("the Snakemake workflow and the SLURM script write the same derivatives as hcld by hand")


if __name__ == "__main__":
    main()
