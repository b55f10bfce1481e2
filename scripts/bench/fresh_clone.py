"""Benchmark: a fresh clone's `make dev` until the runner is ready, before and after the uv
Makefile, with empty package caches (a first-ever run) and with warm ones, in one run.

    python3 scripts/bench/fresh_clone.py [--before REF] [--after REF] [--rounds 1]

Each measurement clones the repository at REF into a scratch folder and times, as `make dev`
does on both Makefiles, `make venv` (its prerequisite: before, the project venv and the
tools venv with pip; after, the project venv alone with uv) followed by `scripts/dev.py` on
free ports, until it prints "local runner ready" (Postgres is the embedded server, created
in the clone, as for a new user without DATABASE_URL). `make dev` itself can't be told a
port, and this machine's 3000 may be taken; the command is the same.

Caches: PIP_CACHE_DIR and UV_CACHE_DIR point at a scratch folder per side, empty for the
"empty caches" run and kept for the "warm caches" run, which uses another fresh clone.
Order, per round: before empty, after empty, before warm, after warm (interleaved, so that
drift on a shared machine hits both sides). Logs stay in the scratch folder (printed).
Prints one line per measurement and one ratio line per cache state with its goal (issue:
ready in at most a third of the time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import free_port

ROOT = Path(__file__).resolve().parents[2]
# The last commit whose Makefile installed the venvs with pip (the "before" of the issue).
BEFORE = "fd1d513"
GOAL = 1 / 3  # after / before


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def measure(ref: str, clone: Path, cache: Path, log: Path) -> tuple[float, float]:
    """(seconds of `make venv`, seconds from there until the runner is ready)."""
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", ref], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VIRTUAL_ENV")}
    env |= {"PIP_CACHE_DIR": str(cache / "pip"), "UV_CACHE_DIR": str(cache / "uv")}
    with log.open("w") as out:
        start = time.monotonic()
        subprocess.run(["make", "venv"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
        made = time.monotonic()
        port = free_port()
        runner = subprocess.Popen([".venv/bin/python", "scripts/dev.py", "--port", str(port),
                                   "--s3-port", str(free_port())], cwd=clone, env=env,
                                  stdout=subprocess.PIPE, stderr=out, text=True)
        try:
            for line in runner.stdout:
                out.write(line)
                if line.startswith("local runner ready"):
                    ready = time.monotonic()
                    break
            else:
                raise SystemExit(f"the runner of {clone} exited before it was ready (see {log})")
        finally:
            runner.send_signal(signal.SIGINT)
            try:
                runner.wait(timeout=60)
            except subprocess.TimeoutExpired:
                runner.kill()
            subprocess.run([".venv/bin/python", "scripts/dev.py", "--stop-postgres"], cwd=clone, env=env,
                           stdout=out, stderr=subprocess.STDOUT)
    return made - start, ready - made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=BEFORE, help=f"ref with the pip Makefile (default {BEFORE})")
    parser.add_argument("--after", default="HEAD", help="ref with the uv Makefile (default HEAD)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    refs = {"before": args.before, "after": args.after}
    scratch = Path(tempfile.mkdtemp(prefix="bench-fresh-clone-"))
    print(f"scratch and logs: {scratch}")
    totals: dict[tuple[str, str], list[float]] = {}
    for n in range(args.rounds):
        caches = {side: scratch / f"cache-{n}-{side}" for side in refs}
        for state in ("empty", "warm"):
            for side, ref in refs.items():
                clone = scratch / f"clone-{n}-{side}-{state}"
                log = scratch / f"{n}-{side}-{state}.log"
                venv_s, runner_s = measure(ref, clone, caches[side], log)
                cached = {tool: du(caches[side] / tool) / 2**20 for tool in ("pip", "uv")
                          if (caches[side] / tool).exists()}
                totals.setdefault((side, state), []).append(venv_s + runner_s)
                print(f"{side} ({ref}), {state} caches: ready in {venv_s + runner_s:.1f} s "
                      f"(make venv {venv_s:.1f} s, runner {runner_s:.1f} s; caches after: "
                      + (", ".join(f"{tool} {mb:.0f} MB" for tool, mb in cached.items()) or "none") + ")",
                      flush=True)
                shutil.rmtree(clone, ignore_errors=True)
    for state in ("empty", "warm"):
        before = min(totals["before", state])
        after = min(totals["after", state])
        ratio = after / before
        verdict = "met" if ratio <= GOAL else "NOT met"
        print(f"fresh clone to ready, {state} caches: after/before = {after:.1f}/{before:.1f} s "
              f"= {ratio:.2f} "
              f"({before / after:.1f}x faster; goal <= {GOAL:.2f}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
