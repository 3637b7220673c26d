#!/usr/bin/env python3
"""Reference findings of the official BIDS validator on every validator fixture.

Runs `bids-validator-deno --format json -r` (PyPI `bids-validator-deno`, pinned below) on
  - every bids-examples copy in tests/data/bids-examples/,
  - examples/multisite/ (must have no errors),
  - every deliberately broken variant in tests/data/validator/variants.json (built in a temp dir by
    applying its operations to its base, exactly as bids_validator/tests/agreement.rs does),
and writes the errors it reports, as [code, location] pairs (locations inside nested derivative
datasets are prefixed with `/derivatives/<name>`), to tests/data/validator/reference.json.

Usage (from the repository root):
    python3 -m venv /tmp/bv && /tmp/bv/bin/pip install bids-validator-deno==3.0.2
    BIDS_VALIDATOR=/tmp/bv/bin/bids-validator-deno python3 scripts/validator_reference.py
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VALIDATOR = os.environ.get("BIDS_VALIDATOR", "bids-validator-deno")


def errors(report, prefix=""):
    out = set()
    for issue in report["issues"]["issues"]:
        if issue["severity"] == "error":
            out.add((issue["code"], prefix + (issue.get("location") or "")))
    for key, sub in (report.get("derivativesSummary") or {}).items():
        out |= errors(sub, key.rstrip("/"))
    return out


def run(dataset):
    proc = subprocess.run([VALIDATOR, "--format", "json", "-r", str(dataset)], capture_output=True, text=True)
    if not proc.stdout.strip():
        sys.exit(f"{VALIDATOR} produced no JSON for {dataset}: {proc.stderr}")
    return sorted([list(e) for e in errors(json.loads(proc.stdout))])


def materialize(variant, dest):
    shutil.copytree(ROOT / variant["base"], dest, symlinks=False)
    for op in variant["ops"]:
        kind = op["op"]
        if kind == "delete":
            (dest / op["path"]).unlink()
        elif kind == "write":
            (dest / op["path"]).parent.mkdir(parents=True, exist_ok=True)
            (dest / op["path"]).write_text(op["text"])
        elif kind == "copy":
            (dest / op["to"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / op["from"], dest / op["to"])
        elif kind == "truncate":
            data = (dest / op["path"]).read_bytes()[: op["bytes"]]
            (dest / op["path"]).write_bytes(data)
        else:
            sys.exit(f"unknown op {kind}")


def main():
    version = subprocess.run(
        [VALIDATOR, "--version"], capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}
    ).stdout.strip()
    version = re.sub(r"\x1b\[[0-9;]*m", "", version)
    datasets = {}
    examples = ROOT / "tests/data/bids-examples"
    for d in sorted(p for p in examples.iterdir() if p.is_dir()):
        datasets[f"bids-examples/{d.name}"] = run(d)
    datasets["examples/multisite"] = run(ROOT / "examples/multisite")
    variants = json.loads((ROOT / "tests/data/validator/variants.json").read_text())
    for v in variants:
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / "ds"
            materialize(v, dest)
            datasets[f"variant/{v['name']}"] = run(dest)
    out = {"validator": "bids-validator-deno", "version": version, "datasets": datasets}
    path = ROOT / "tests/data/validator/reference.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    for name, errs in datasets.items():
        print(f"{name}: {len(errs)} errors")


if __name__ == "__main__":
    main()
