"""The ``Runner``: the functions of one template, each with its environment and worker
pool, served over HTTP (Function URLs and the runner's own ``/_...`` endpoints) and on
their schedules."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from devkit import cfn
from devkit.runner.cors import cors_headers
from devkit.runner.function_url import error_response, http_response, request_event
from devkit.runner.pool import MAX_WORKERS, FunctionPool, Invocation, stderr_sink
from devkit.runner.scheduler import Scheduler
from devkit.runner.server import MAX_PAYLOAD, RequestHandler, Server
from devkit.runner.services import free_port_pair
from devkit.runner.settings import (
    DEFAULT_ENV_FILE,
    DEFAULT_PORT,
    FAKE_PROVIDER_SETTINGS,
    LOCAL_SECRETS,
    PASSTHROUGH,
    SHELL_SETTINGS,
)

if TYPE_CHECKING:
    from devkit.runner.services import Services

log = logging.getLogger("devkit.runner")


class Runner:
    """The functions of one template, served over HTTP and on their schedules."""

    def __init__(self, template: Path = cfn.TEMPLATE, *, env_file: Path | None = DEFAULT_ENV_FILE,
                 host: str = "127.0.0.1", port: int | None = DEFAULT_PORT,
                 services_env: dict[str, str] | None = None, max_workers: int = MAX_WORKERS,
                 sink: Callable[[str], None] | None = None):
        """``port=None`` builds a runner that only invokes (scripts/invoke); 0 picks a free port."""
        self.template_path = Path(template).resolve()
        self.server: Server | None = None
        if port is not None:
            try:
                self.server = Server((host, port), RequestHandler)
            except OSError as exc:
                free = free_port_pair(port + 2)
                raise SystemExit(f"cannot listen on {host}:{port} ({exc.strerror}): is another runner "
                                 f"running? Choose another port: PORT={free} make dev "
                                 f"(or scripts/dev.py --port {free}).") from None
            self.server.runner = self
            port = self.server.server_address[1]
        self.port = port or DEFAULT_PORT
        self.base_url = f"http://{host}:{self.port}"
        try:
            self.env_file = cfn.EnvFile.read(env_file)
            self.template = cfn.load(self.template_path)
            self.functions, self.resolver = cfn.resolve_functions(
                self.template, self.template_path.parent, self.env_file.template_parameters,
                base_url=self.base_url)
        except BaseException:
            if self.server is not None:
                self.server.server_close()
            raise
        self.services_env = dict(services_env or {})
        self.sink = sink or stderr_sink
        self.pools = {name: FunctionPool(fn, self.function_env(fn), max_workers=max_workers, sink=self.sink)
                      for name, fn in self.functions.items()}
        self.scheduler = Scheduler(self)
        self._threads: list[threading.Thread] = []
        self.services: Services | None = None  # set by main() when it started them

    # -- configuration ---------------------------------------------------------------
    def function_env(self, fn: cfn.LocalFunction) -> dict[str, str]:
        """The environment a function's workers get, lowest precedence first: a few process
        variables, the template's (Globals + function), the local services, secrets and
        provider endpoints set in the shell, env.local.json, and Lambda's reserved ones."""
        from common.config import SECRET_NAMES

        env = {k: os.environ[k] for k in PASSTHROUGH if k in os.environ}
        for key, value in fn.environment.items():
            # Locally secrets are plain values: a reference to SSM or Secrets Manager from
            # the template would make the function call AWS for them.
            if not key.endswith(("_PARAM", "_SECRET_ARN")):
                env[key] = ",".join(map(str, value)) if isinstance(value, list) else cfn.env_value(value)
        services = dict(self.services_env)
        shell = {k: os.environ[k] for k in (*SECRET_NAMES, *SHELL_SETTINGS) if os.environ.get(k)}
        own = self.env_file.for_function(fn)
        for key, names in FAKE_PROVIDER_SETTINGS.items():
            if shell.get(key) or own.get(key):  # a real account: no setting may point at the fake
                for name in (key, *names):
                    services.pop(name, None)
        env.update(services)
        env.update(shell)
        env.update(own)
        env.update({
            "AWS_LAMBDA_FUNCTION_NAME": fn.name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}", "AWS_LAMBDA_LOG_STREAM_NAME": "local",
            "AWS_REGION": cfn.REGION, "AWS_DEFAULT_REGION": cfn.REGION,
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13", "LAMBDA_TASK_ROOT": str(fn.code_uri),
            "_HANDLER": fn.handler, "TZ": "UTC", "PYTHONUNBUFFERED": "1",
            "AWS_SAM_LOCAL": "true",  # as sam local does: Powertools' tracer then skips X-Ray
            "LOCAL_LAYER_PATHS": os.pathsep.join(map(str, fn.layers)),
            "LOCAL_FUNCTION_ARN": f"arn:aws:lambda:{cfn.REGION}:{cfn.ACCOUNT_ID}:function:{fn.name}",
        })
        return env

    def jwt_settings(self) -> dict[str, str]:
        """``JWT_SECRET``, ``JWT_ISSUER``, ``JWT_AUDIENCE``, ``JWT_JWKS_URL`` as the functions
        get them (those of the first function with a URL): what a token minted for this
        runner must match (the banner's tokens, scripts/token)."""
        names = ("JWT_SECRET", "JWT_ISSUER", "JWT_AUDIENCE", "JWT_JWKS_URL")
        functions = sorted(self.functions.values(), key=lambda f: (f.url is None, f.name))
        if functions:
            env = self.function_env(functions[0])
        else:
            shell = {k: os.environ[k] for k in names if os.environ.get(k)}
            env = {**LOCAL_SECRETS, **self.services_env, **shell, **self.env_file.all_functions}
        return {k: env[k] for k in names if env.get(k)}

    def function(self, name: str) -> cfn.LocalFunction:
        """A function by local name or logical id."""
        if name in self.functions:
            return self.functions[name]
        for fn in self.functions.values():
            if fn.logical_id == name:
                return fn
        raise KeyError(f"no function {name!r}; known: {', '.join(sorted(self.functions)) or '(none)'}")

    def bucket_names(self) -> list[str]:
        return [self.resolver.bucket_name(lid) for lid, res in self.resolver.resources.items()
                if res.get("Type") == "AWS::S3::Bucket"]

    # -- invoking --------------------------------------------------------------------
    def default_event(self, name: str, schedule: str | None = None) -> Any:
        fn = self.function(name)
        for sched in fn.schedule_list:
            if schedule in (None, sched.name):
                return sched.input
        if schedule is not None:
            raise KeyError(f"{fn.name} has no schedule {schedule!r}")
        return {}

    def invoke(self, name: str, event: Any = None, *, request_id: str | None = None) -> Invocation:
        fn = self.function(name)
        return self.pools[fn.name].invoke(self.default_event(fn.name) if event is None else event,
                                          request_id=request_id)

    def run_schedule(self, name: str, *, schedule: str | None = None, event: Any = None) -> Invocation:
        fn = self.function(name)
        if not fn.schedule_list:
            raise KeyError(f"{fn.name} has no schedule")
        sched = next((s for s in fn.schedule_list if schedule in (None, s.name)), None)
        if sched is None:
            raise KeyError(f"{fn.name} has no schedule {schedule!r}")
        inv = self.invoke(fn.name, sched.input if event is None else event)
        self._log(fn.name, "SCHEDULE", sched.name, _status(inv), inv)
        return inv

    def _log(self, function: str, method: str, route: str, status: int, inv: Invocation | None,
             duration_ms: float | None = None) -> None:
        duration = duration_ms if duration_ms is not None else inv.duration_ms if inv else 0.0
        cold = "-" if inv is None else str(inv.cold).lower()
        log.info("function=%s method=%s route=%s status=%d duration_ms=%.1f cold=%s",
                 function, method, route, status, duration, cold)

    # -- HTTP ------------------------------------------------------------------------
    def handle(self, req: RequestHandler) -> None:
        started = time.perf_counter()
        path, _, query = req.path.partition("?")
        name, _, rest = path.lstrip("/").partition("/")
        body = req.read_body()
        if body is None:
            self._log(name or "-", req.command, "/" + rest, 413, None, (time.perf_counter() - started) * 1000)
            req.reply(413, [("Content-Type", "application/json")], b'{"Message":"Request Entity Too Large"}')
            return
        if name.startswith("_"):
            self._internal(req, name, rest, query, body)
            return
        fn = self.functions.get(name)
        if fn is None or fn.url is None:
            served = ", ".join(f"/{n}/" for n, f in sorted(self.functions.items()) if f.url is not None)
            self._log(name or "-", req.command, "/" + rest, 404, None, (time.perf_counter() - started) * 1000)
            req.reply(404, [("Content-Type", "application/json")], json.dumps(
                {"Message": f"no function URL at /{name}; served: {served or '(none)'}"}).encode())
            return
        route = "/" + rest
        cors = fn.url.get("Cors")
        origin = req.headers.get("origin")
        if req.command == "OPTIONS" and cors and origin and req.headers.get("access-control-request-method"):
            # CORS preflight: the URL service answers it without invoking the function
            headers = cors_headers(cors, origin, preflight=True,
                                    request_headers=req.headers.get("access-control-request-headers"))
            self._log(fn.name, "OPTIONS", route, 200, None, (time.perf_counter() - started) * 1000)
            req.reply(200, headers, b"")
            return
        event = request_event(req.command, route, query, req.headers.items(), body,
                              source_ip=req.client_address[0], port=self.port)
        request_id = event["requestContext"]["requestId"]
        inv = self.pools[fn.name].invoke(event)
        if inv.ok:
            try:
                status, headers, data = http_response(inv.result)
            except (TypeError, ValueError, AttributeError) as exc:  # binascii.Error is a ValueError
                self.sink(f"{fn.name} | invalid Function URL response: {type(exc).__name__}: {exc}")
                inv.status = "error"
                inv.error = {"errorType": "Runtime.InvalidResponse", "errorMessage": str(exc)}
                status, headers, data = error_response(inv)
        else:
            status, headers, data = error_response(inv)
        if inv.ok and len(data) > MAX_PAYLOAD:
            status, headers, data = 502, [("Content-Type", "application/json")], \
                b'{"Message":"Response payload size exceeded maximum allowed payload size"}'
        headers += [("X-Amzn-RequestId", request_id), *cors_headers(cors, origin, preflight=False)]
        # logged before replying, so a client that got its answer finds the line written
        self._log(fn.name, req.command, route, status, inv, (time.perf_counter() - started) * 1000)
        req.reply(status, headers, data)

    def _internal(self, req: RequestHandler, name: str, rest: str, query: str, body: bytes) -> None:
        def answer(status: int, payload: Any) -> None:
            data = json.dumps(payload, default=str).encode()
            req.reply(status, [("Content-Type", "application/json")], data)

        params = dict(parse_qsl(query))
        if name == "_health":
            return answer(200, {"ok": True, "template": str(self.template_path),
                                "functions": sorted(self.functions)})
        if name == "_schedules" and not rest:
            return answer(200, [{"function": e.function, "schedule": e.schedule.name,
                                 "expression": e.schedule.expression, "enabled": e.schedule.enabled,
                                 "next_run": e.next_run.isoformat() if e.next_run else None}
                                for e in self.scheduler.entries])
        if name in ("_schedules", "_invoke") and rest and req.command == "POST":
            try:
                event = json.loads(body) if body.strip() else None
            except ValueError:
                return answer(400, {"Message": "the body must be a JSON event"})
            try:
                if name == "_schedules":
                    inv = self.run_schedule(rest, schedule=params.get("schedule"), event=event)
                else:
                    inv = self.invoke(rest, event)
                    self._log(inv.function, "INVOKE", "-", _status(inv), inv)
            except KeyError as exc:
                return answer(404, {"Message": exc.args[0]})
            return answer(200 if inv.ok else _status(inv), inv.as_json())
        return answer(404, {"Message": f"unknown runner endpoint {req.command} /{name}/{rest}"})

    # -- lifecycle -------------------------------------------------------------------
    def start(self, *, run_schedules: bool = True) -> Runner:
        if self.server is not None:
            thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                      daemon=True, name="runner-http")
            thread.start()
            self._threads.append(thread)
        if run_schedules:
            self.scheduler.start()
        return self

    def stop(self) -> None:
        self.scheduler.stop()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        for pool in self.pools.values():
            pool.close()


def _status(inv: Invocation) -> int:
    return 200 if inv.ok else 504 if inv.status == "timeout" else 502
