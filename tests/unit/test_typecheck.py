"""The type checker's configuration covers the code that ships: mypy (``make typecheck``,
part of ``make lint`` and ``make test``) resolves each function's package from its folder,
as Lambda does from its CodeUri, so every function folder must be on ``mypy_path``."""

import tomllib

from devkit import ROOT, cfn


def _mypy() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def test_mypy_checks_the_layer_and_every_function_strictly():
    config = _mypy()
    roots = {ROOT / path for path in config["mypy_path"]}
    assert roots == {ROOT / "layers" / "common"} | {spec.code_uri for spec in cfn.functions().values()}
    assert config["strict"] is True
    assert set(config["files"]) == {"layers/common/common", "functions"}


def test_relaxed_modules_are_few_and_name_their_error_codes():
    """Overrides may turn off named error codes (or untyped decorators) for listed modules,
    never ignore_errors or the strict flags wholesale."""
    for override in _mypy().get("overrides", []):
        assert not override.get("ignore_errors"), override
        allowed = {"module", "disable_error_code", "disallow_untyped_decorators", "ignore_missing_imports"}
        assert set(override) <= allowed, override
