"""The end-to-end tests' `make dev`: the runner in-process on a free port (worker
processes, moto S3, the payment fakes and their checkout pages) on a database of its own,
shared by the tests of this folder; and a real headless Chromium (Debian's, installed
here when missing) driven by Playwright, for the checkout pages."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from devkit import cfn, postgres, s3, seed
from devkit import runner as rt
from devkit.runner.services import Services

CHROMIUM = "/usr/bin/chromium"
#: Flags that work headless as root in a container, offline, with nothing in the background.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class Local:
    runner: rt.Runner
    services: Services
    database_url: str
    server_url: str
    out: io.StringIO

    def env(self, function: str) -> dict[str, str]:
        return self.runner.function_env(self.runner.functions[function])

    def token(self, user: uuid.UUID) -> str:
        return seed.token(user, self.env("process-image")["JWT_SECRET"])

    def call(self, method: str, path: str, *, user: uuid.UUID | None = None, body: Any = None,
             headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        if user is not None:
            hdrs["authorization"] = f"Bearer {self.token(user)}"
        if body is not None:
            data, hdrs["content-type"] = json.dumps(body).encode(), "application/json"
        response = requests.request(method, f"{self.runner.base_url}{path}", data=data, headers=hdrs,
                                    timeout=60)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text


@pytest.fixture(scope="package")
def local() -> Iterator[Local]:
    """`make dev` in-process on a free port, on a database of its own, with the shell of a
    developer who set no JWT_SECRET (the test settings' secret is put back after)."""
    server = os.environ.get("DATABASE_URL") or postgres.embedded_url()
    name = f"e2e_{uuid.uuid4().hex[:10]}"
    url = postgres.create_database(server, name)
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "JWT_SECRET", *s3.environment("x"))}
    os.environ["DATABASE_URL"] = url
    os.environ.pop("JWT_SECRET", None)
    out, stop, ready, started = io.StringIO(), threading.Event(), threading.Event(), []
    thread = threading.Thread(target=rt.main, args=(cfn.TEMPLATE, 0, None), daemon=True, kwargs={
        "run_schedules": False, "stop": stop, "out": out,
        "on_ready": lambda r: (started.append(r), ready.set())})
    thread.start()
    try:
        assert ready.wait(60), out.getvalue()
        runner = started[0]
        assert runner.services is not None
        yield Local(runner, runner.services, url, server, out)
    finally:
        stop.set()
        thread.join(30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        from common import db

        db.reset()
        postgres.drop_database(server, name)


def ensure_chromium() -> str:
    """Debian's Chromium, installed with apt when missing (CI and test machines are fresh
    Debian machines where the tests run as root); a skip only where apt can't be used."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"{CHROMIUM} is missing and apt-get can't install it here (needs Debian and root): "
                    "install Debian's chromium package to run the checkout pages in a browser")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return CHROMIUM


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright (never a browser of Playwright's own: the
    Debian one, by path); each test opens a fresh context (a new profile)."""
    executable = ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(60_000)  # a button waits for the webhook's cold start
    try:
        yield context.new_page()
    finally:
        context.close()
