"""Every committed lock is what its inputs resolve to (scripts/lock --check: uv against the
package index, so this needs it reachable), and the check does fail on a stale lock."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from devkit import ROOT

UV = ROOT / ".venv" / "bin" / "uv"


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(root / "scripts" / "lock"), "--check"], cwd=root,
                          env={**os.environ, "UV": str(UV)},
                          capture_output=True, text=True, timeout=600)


def test_locks_match_their_inputs():
    out = _check(ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]


def test_check_fails_when_an_input_changed_without_make_lock(tmp_path):
    """A dependency added to a function's requirements.in and not locked."""
    for path in [*ROOT.glob("**/requirements*.in"), *ROOT.glob("**/requirements*.txt"),
                 ROOT / "pyproject.toml", ROOT / "scripts" / "lock"]:
        rel = path.relative_to(ROOT)
        if not rel.parts[0].startswith("."):
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, tmp_path / rel)
    with (tmp_path / "functions" / "paymob-webhook" / "requirements.in").open("a") as f:
        f.write("requests==2.34.2\n")
    out = _check(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "stale lock(s): functions/paymob-webhook/requirements.txt, requirements-dev.txt" in out.stdout
    assert "+requests==2.34.2" in out.stdout
