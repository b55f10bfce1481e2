"""template.yaml: linted with SAM and cfn-lint, and built with `sam build` (no container)."""

import os
import shutil
import subprocess
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from devkit import ROOT, cfn
from tests.unit.test_locks import LAYER, pins

TOOLS = ROOT / ".venv-tools" / "bin"
ENV = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1",
       "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}


def _run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def test_sam_validate_lint_is_clean():
    out = _run(str(TOOLS / "sam"), "validate", "--lint", "--region", "us-east-1")
    assert out.returncode == 0, out.stdout + out.stderr


def test_cfn_lint_is_clean():
    out = _run(str(TOOLS / "cfn-lint"), "template.yaml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_function_handler_resolves_to_code():
    for spec in cfn.functions().values():
        module = spec.handler.rsplit(".", 1)[0].replace(".", "/")
        assert (spec.code_uri / f"{module}.py").is_file(), spec.name


def _shipped(folder: Path) -> dict[str, str]:
    """name -> version of every distribution installed in a built artefact folder."""
    found = {}
    for info in folder.glob("*.dist-info"):
        meta = Parser().parse((info / "METADATA").open(encoding="utf-8"), headersonly=True)
        found[canonicalize_name(meta["Name"])] = meta["Version"]
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)  # the build's own limit: every dependency set cross-built, 3-6 min on 2 busy cores
def test_sam_build_ships_exactly_the_locks(tmp_path):
    """Each artefact holds exactly its lock's packages at its lock's versions (issue: sam's
    python builder shipped a pydantic in functions over the layer's), for arm64."""
    build_dir = tmp_path / "build"
    out = _run(str(TOOLS / "sam"), "build", "--build-dir", str(build_dir),
               "--cache-dir", str(tmp_path / "cache"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    layer = build_dir / "CommonLayer" / "python"
    assert (layer / "common" / "db.py").is_file()
    assert (layer / "common" / "__pycache__" / "db.cpython-313.pyc").is_file()
    assert _shipped(layer) == pins(LAYER / "requirements.txt")
    for spec in cfn.functions().values():
        artefact = build_dir / spec.logical_id
        module = spec.handler.rsplit(".", 1)[0].replace(".", "/")
        assert (artefact / f"{module}.py").is_file(), spec.name
        assert _shipped(artefact) == pins(spec.code_uri / "requirements.txt"), spec.name
        # Bytecode for Lambda's python3.13 only, compiled by the build (its code folders are
        # read-only: without it every cold start compiles from source)
        compiled = artefact / Path(module).parent / "__pycache__" / f"{Path(module).name}.cpython-313.pyc"
        assert compiled.is_file(), spec.name
        assert all(p.name.endswith(".cpython-313.pyc") for p in artefact.rglob("*.pyc")), spec.name
    # arm64 (aarch64) wheels for the compiled dependencies, not the build machine's
    for package in ("pydantic_core", "psycopg_binary"):
        libs = [p.name for p in (layer / package).glob("*.so")]
        assert libs and all("aarch64" in name for name in libs), (package, libs)
    # The functions' own compiled dependencies too (face detection, photos of journal entries)
    for function, pattern in (("ProcessImageFunction", "_dlib_pybind11*.so"),
                              ("ProcessImageFunction", "numpy/_core/_multiarray_umath*.so"),
                              ("AnalyzeEntryFunction", "PIL/_imaging*.so"),
                              ("AnalyzeEntryFunction", "_pillow_heif*.so")):
        libs = [p.name for p in (build_dir / function).glob(pattern)]
        assert libs and all("aarch64" in name for name in libs), (function, pattern, libs)
    # Lambda refuses a function whose code and layers unzip to more than 250 MB
    layer_bytes = _tree_bytes(build_dir / "CommonLayer")
    for function in (p for p in build_dir.iterdir() if p.is_dir() and p.name != "CommonLayer"):
        total = layer_bytes + _tree_bytes(function)
        assert total < LAMBDA_UNZIPPED_LIMIT * 0.9, (function.name, total)
    shutil.rmtree(build_dir, ignore_errors=True)


#: Lambda's limit on a function's code and layers, unzipped (bytes).
LAMBDA_UNZIPPED_LIMIT = 262_144_000


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
