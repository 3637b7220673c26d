#!/usr/bin/env python3
"""Prints one section of an Apptainer definition file as a POSIX shell script (issue 8).

spython converts Singularity.def into a Dockerfile that podman builds, but it rewrites `%test` into
`RUN echo "..." >> /tests.sh` lines that lose the section's quoting (`"$out"` is expanded at build
time). So CI builds spython's conversion (header, labels, environment, runscript) and runs the
`%test` and `%runscript` sections *verbatim* inside it, as `apptainer test` / `apptainer run`
would, with the script this prints.

  python3 tests/singularity_test.py Singularity.def test        > test.sh
  python3 tests/singularity_test.py Singularity.def runscript   > run.sh   # then: sh run.sh ARGS...

Also checks what an Apptainer user relies on: `Bootstrap: docker` with a `From:`, and the sections
%labels, %environment, %runscript, %test and %help present and non-empty. Exit 1 names what is wrong.
"""

import re
import sys
from pathlib import Path

REQUIRED = ["labels", "environment", "runscript", "test", "help"]


def sections(text):
    """Header lines and {section name: body lines} of a definition file."""
    header, found, current = [], {}, None
    for line in text.splitlines():
        m = re.match(r"^%([A-Za-z]+)\b(.*)$", line)
        if m:
            current = m.group(1).lower()
            found[current] = []
            continue
        (header if current is None else found[current]).append(line)
    return header, found


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("test", "runscript"):
        sys.exit("usage: singularity_test.py DEF_FILE test|runscript")
    path = Path(sys.argv[1])
    header, found = sections(path.read_text())
    keys = {}
    for line in header:
        m = re.match(r"^\s*(\w+)\s*:\s*(\S.*?)\s*$", line)
        if m and not line.lstrip().startswith("#"):
            keys[m.group(1).lower()] = m.group(2)
    problems = []
    if keys.get("bootstrap") != "docker":
        problems.append(f"Bootstrap is {keys.get('bootstrap')!r}, expected 'docker'")
    if not keys.get("from"):
        problems.append("no From: image")
    for name in REQUIRED:
        body = [ln for ln in found.get(name, []) if ln.strip() and not ln.strip().startswith("#")]
        if not body:
            problems.append(f"%{name} is missing or empty")
    if problems:
        sys.exit(f"{path}: " + "; ".join(problems))
    body = "\n".join(ln[4:] if ln.startswith("    ") else ln for ln in found[sys.argv[2]])
    # The environment Apptainer sources before either section.
    env = "\n".join(ln.strip() for ln in found["environment"] if ln.strip())
    print("#!/bin/sh")
    print(env)
    print(body.strip())


if __name__ == "__main__":
    main()
