"""One Lambda execution environment, run as ``python -m devkit.worker`` by the local runner.

The runner starts it with the function's CodeUri as working directory and the function's
environment, and speaks JSON lines with it over the process's original stdin/stdout:

    worker -> {"type": "ready", "init_ms": 12.3}  or  {"type": "init_error", "error": {...}}
    runner -> {"event": {...}, "request_id": "...", "timeout_ms": 30000}
    worker -> {"ok": true, "result": ..., "ms": 1.2}  or  {"ok": false, "error": {...}, "ms": ...}

Like Lambda's Python runtime: sys.path is the CodeUri, then the layers (as /opt/python),
then the interpreter's own paths; the handler module is imported once (the init phase)
and called for every invocation while the process stays warm; an exception in the
handler is reported and the process stays warm. The function's own prints and logs go to
stderr (fd 1 is pointed there), so they can never corrupt the protocol.

This module imports only the standard library, so the function's modules are the only
non-stdlib ones in sys.modules, as in Lambda.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Any


class LambdaContext:
    """Lambda's context object (the attributes code and Powertools read)."""

    def __init__(self, request_id: str, timeout_ms: int):
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.invoked_function_arn = os.environ.get("LOCAL_FUNCTION_ARN", "")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.aws_request_id = request_id
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _error(exc: BaseException) -> dict[str, Any]:
    # the handler's frames only, as Lambda reports them
    tb = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    trace = [f'  File "{f.filename}", line {f.lineno}, in {f.name}\n    {f.line}\n' for f in tb]
    return {"errorType": type(exc).__name__, "errorMessage": str(exc), "stackTrace": trace}


def _default(value: Any) -> Any:
    from decimal import Decimal  # Lambda's runtime serialises Decimals as numbers too

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _load_handler(spec: str) -> Any:
    module_name, _, attr = spec.replace("/", ".").rpartition(".")
    if not module_name:
        raise ValueError(f"Bad handler '{spec}': expected module.function")
    return getattr(importlib.import_module(module_name), attr)


def _source_only(roots: list[str]) -> None:
    """Import the function's and the layers' own modules from source, never from a .pyc:
    CPython trusts a .pyc whose source has the same size and whole-second mtime, which a
    quick edit can match, and a code change must always run the new code."""
    from importlib import machinery

    class SourceOnlyLoader(machinery.SourceFileLoader):
        def path_stats(self, path: str) -> Any:
            raise OSError("no bytecode cache for function code")  # get_code then compiles the source

    def hook(path: str) -> machinery.FileFinder:
        if any(path == root or path.startswith(root + os.sep) for root in roots):
            return machinery.FileFinder(path, (machinery.ExtensionFileLoader, machinery.EXTENSION_SUFFIXES),
                                        (SourceOnlyLoader, machinery.SOURCE_SUFFIXES))
        raise ImportError  # not ours: the next hook (the standard one) handles it

    sys.path_hooks.insert(0, hook)
    sys.path_importer_cache.clear()


def main() -> None:
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # the function's stdout (print, Powertools logs) goes to stderr

    def send(message: dict[str, Any]) -> None:
        try:
            line = json.dumps(message, default=_default, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            line = json.dumps({"ok": False, "ms": message.get("ms", 0), "error": {
                "errorType": "Runtime.MarshalError", "errorMessage": f"Unable to marshal response: {exc}"}})
        proto_out.write(line.encode() + b"\n")

    # Lambda's path: the task root, then the layers (/opt/python), then the runtime's own.
    layers = [p for p in os.environ.get("LOCAL_LAYER_PATHS", "").split(os.pathsep) if p]
    task_root = os.environ["LAMBDA_TASK_ROOT"]
    sys.path[:] = [task_root, *layers, *(p for p in sys.path[1:] if p not in (task_root, *layers))]
    _source_only([task_root, *layers])

    started = time.perf_counter()
    try:
        handler = _load_handler(os.environ["_HANDLER"])
    except Exception as exc:
        traceback.print_exc()
        kind = "Runtime.ImportModuleError" if isinstance(exc, ImportError) else "Runtime.HandlerNotFound" \
            if isinstance(exc, AttributeError) else type(exc).__name__
        send({"type": "init_error", "error": {**_error(exc), "errorType": kind}})
        return
    send({"type": "ready", "init_ms": round((time.perf_counter() - started) * 1000, 2)})

    for line in proto_in:
        request = json.loads(line)
        context = LambdaContext(request["request_id"], request["timeout_ms"])
        started = time.perf_counter()
        try:
            result = handler(request["event"], context)
        except Exception as exc:
            ms = round((time.perf_counter() - started) * 1000, 3)
            traceback.print_exc()
            send({"ok": False, "error": _error(exc), "ms": ms})
            continue
        send({"ok": True, "result": result, "ms": round((time.perf_counter() - started) * 1000, 3)})


if __name__ == "__main__":
    main()
