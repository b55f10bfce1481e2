"""Benchmark: the account function's cold start, in one run.

    .venv/bin/python scripts/bench/account.py [--colds 7]

Measured: `python -X importtime -c "import account.app"` in fresh processes (the
function's CodeUri on the path, as Lambda has it) against the bare handler of
scripts/bench/layer_handler/ (the common layer's HTTP wiring only: what every
client-facing function pays), alternating; the sum of the top-level imports the
statement made. Also, for the record, what the export job adds on its first invocation
(`account.jobs`, which imports the archive code): URL requests never pay it.

Target: account's cold import under 1.3x the bare layer handler.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from devkit import ROOT

CODE_URI = ROOT / "functions" / "account"
BARE_DIR = Path(__file__).resolve().parent / "layer_handler"
TARGET_RATIO = 1.3


def import_ms(statement: str, path: Path, *, after: str = "") -> float:
    """Import time of ``statement`` in a fresh interpreter (-X importtime), in ms: the sum
    of the top-level entries it imported (interpreter start-up, and ``after``, excluded)."""
    code = f"import sys; {after or 'pass'}; sys.stderr.write('@@start\\n'); {statement}"
    env = {**os.environ, "PYTHONPATH": str(path), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=path)
    total = 0
    for line in out.stderr.split("@@start\n", 1)[1].splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and m.group(2) == "":  # top level: not nested under another import
            total += int(m.group(1))
    return total / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--colds", type=int, default=7, help="fresh processes per side (default 7)")
    args = parser.parse_args()
    account, bare, job = [], [], []
    for _ in range(args.colds):
        account.append(import_ms("import account.app", CODE_URI))
        bare.append(import_ms("import layer_app", BARE_DIR))
        job.append(import_ms("import account.jobs, account.archive", CODE_URI, after="import account.app"))
    ratio = statistics.median(account) / statistics.median(bare)
    print(f"cold import (ms, -X importtime, fresh processes, median of {args.colds}): "
          f"account.app {statistics.median(account):.1f}, bare layer handler {statistics.median(bare):.1f}, "
          f"ratio {ratio:.2f}x (goal < {TARGET_RATIO}x: {'met' if ratio < TARGET_RATIO else 'NOT met'})")
    print(f"the export job's first invocation adds {statistics.median(job):.1f} ms of imports "
          "(URL requests never load it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
