"""What a cold start imports: each function's handler module in a fresh interpreter, as
Lambda loads it (its CodeUri on the path, tracing off), must not import the X-Ray SDK,
botocore's machinery, boto3, or the heavy libraries a route loads when it needs them
(the OpenAI and Stripe SDKs, Pillow, dlib, numpy). Their import is most of a cold start
that does not use them (docs/http.md, "Cold start")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from devkit.cfn import functions

#: Top-level packages no handler module may import.
FORBIDDEN = ("aws_xray_sdk", "boto3", "s3transfer", "openai", "stripe", "PIL", "pillow_heif", "dlib", "numpy",
             "pydantic_settings", "requests", "httpx")

CHILD = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("name", sorted(functions()))
def test_handler_import_stays_light(name: str) -> None:
    spec = functions()[name]
    module = spec.handler.rsplit(".", 1)[0]
    env = {k: v for k, v in os.environ.items() if k not in ("LAMBDA_TASK_ROOT", "POWERTOOLS_TRACE_DISABLED")}
    env["PYTHONPATH"] = str(spec.code_uri)
    out = subprocess.run([sys.executable, "-c", CHILD, module], env=env, cwd=spec.code_uri,
                         capture_output=True, text=True, check=True)
    modules = json.loads(out.stdout.splitlines()[-1])
    heavy = sorted({m.split(".")[0] for m in modules if m.split(".")[0] in FORBIDDEN})
    # Powertools imports the bare botocore package (its __init__, well under a millisecond)
    # to register its user-agent hook; nothing of botocore's own machinery may follow.
    botocore = sorted(m for m in modules if m.startswith("botocore."))
    assert heavy == [] and botocore == [], f"{module} imports {heavy + botocore[:5]}"


#: The first validator pydantic builds, after the handler's import, counting the scans of
#: installed packages' entry points (pydantic's plugin lookup).
FIRST_VALIDATOR = """
import importlib, importlib.metadata as md, sys
scans = []
real = md.entry_points
md.entry_points = lambda *a, **k: scans.append(k) or real(*a, **k)
importlib.import_module(sys.argv[1])
import pydantic
pydantic.TypeAdapter(int).validate_python(1)
print(len(scans))
"""


def test_cold_start_scans_no_entry_points() -> None:
    """The template turns pydantic's plugin lookup off for every function: it reads every
    installed package's metadata on the first validator, ~20 ms of each cold start."""
    spec = functions()["account"]
    assert spec.environment.get("PYDANTIC_DISABLE_PLUGINS") == "__all__"
    env = {**os.environ, "PYTHONPATH": str(spec.code_uri), "PYDANTIC_DISABLE_PLUGINS": "__all__"}
    out = subprocess.run([sys.executable, "-c", FIRST_VALIDATOR, spec.handler.rsplit(".", 1)[0]], env=env,
                         cwd=spec.code_uri, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "0"
