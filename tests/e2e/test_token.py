"""`scripts/token` as a new developer runs it: from a shell without the project's
virtualenv and without JWT_SECRET, against a running `make dev`."""

from __future__ import annotations

import os
import subprocess

import requests

from devkit import ROOT, seed
from tests.e2e.conftest import Local


def test_scripts_token_mints_a_token_make_dev_accepts(local: Local) -> None:
    # Given a shell with neither the virtualenv on PATH nor a JWT_SECRET (as make dev's here)
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    # When the script is run directly, then it switches to the virtualenv and prints a token
    minted = subprocess.run([str(ROOT / "scripts" / "token"), "--env-file", "none"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=True)
    assert minted.stderr == ""
    # That the running functions accept, for the demo user
    response = requests.get(f"{local.runner.base_url}/account/me", timeout=60,
                            headers={"authorization": f"Bearer {minted.stdout.strip()}"})
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == str(seed.DEMO_USER_ID)
