"""The local services a runner's functions use: Postgres (``DATABASE_URL`` or the embedded
server, migrated and seeded), moto S3 with the buckets and demo objects, the Paymob and
Stripe fakes, started in parallel and stopped together."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from devkit import s3
from devkit.runner.settings import (
    LOCAL_PAYMOB_KEYS,
    LOCAL_REVENUECAT_API_KEY,
    LOCAL_SECRETS,
    LOCAL_STRIPE_API_KEY,
    WEBHOOK_FUNCTIONS,
    relative,
)

if TYPE_CHECKING:
    from devkit.runner.app import Runner


@dataclass
class Services:
    database_url: str
    database_source: str  # "DATABASE_URL" or "embedded (.local/pgdata)"
    s3_endpoint: str
    buckets: list[str]
    applied: list[str] = field(default_factory=list)
    seeded: Any = None
    moto: s3.Server | None = None
    s3_note: str = ""  # e.g. why S3 is not on the port asked for
    paymob: Any = None  # devkit.fake_paymob.FakePaymob
    stripe: Any = None  # devkit.fake_stripe.FakeStripe
    revenuecat: Any = None  # devkit.fake_revenuecat.FakeRevenueCat

    def env(self) -> dict[str, str]:
        env = {**LOCAL_SECRETS, "DATABASE_URL": self.database_url}
        env.update(s3.environment(self.s3_endpoint))
        if self.paymob is not None:
            from devkit.fake_paymob import INTEGRATION_ID

            env.update(LOCAL_PAYMOB_KEYS, PAYMOB_API_URL=self.paymob.base_url,
                       PAYMOB_INTEGRATION_IDS=str(INTEGRATION_ID))
        if self.stripe is not None:
            env.update(STRIPE_API_KEY=LOCAL_STRIPE_API_KEY, STRIPE_API_BASE=self.stripe.base_url)
        if self.revenuecat is not None:
            env.update(REVENUECAT_API_KEY=LOCAL_REVENUECAT_API_KEY,
                       REVENUECAT_API_URL=self.revenuecat.base_url)
        return env

    def stop(self) -> None:
        for name in ("moto", "paymob", "stripe", "revenuecat"):
            server = getattr(self, name)
            if server is not None:
                server.stop()
                setattr(self, name, None)


def _start_database() -> tuple[str, str, list[str], Any]:
    from devkit import migrations, postgres, seed

    if os.environ.get("DATABASE_URL"):
        url, source = os.environ["DATABASE_URL"], "DATABASE_URL"
    else:
        url = _embedded_url()
        source = f"embedded, data in {relative(postgres.DEFAULT_DATA_DIR)}"
    applied = migrations.apply(url)
    return url, source, applied, seed.seed(url)


def _embedded_url() -> str:
    """Start the embedded server from a child process: the server then outlives the
    runner (a second `make dev` reuses it and its data), and the runner never holds a
    handle that would stop it on exit."""
    code = "from devkit import postgres; print(postgres.embedded_url())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         start_new_session=True)
    if out.returncode != 0:
        raise SystemExit(f"could not start the embedded Postgres:\n{out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


def start_s3(buckets: list[str], port: int | None, *, port_fixed: bool,
              state_dir: Path | None) -> tuple[s3.Server, str]:
    """moto with ``buckets`` and the demo objects, on ``port``: when ``port_fixed`` (you
    chose it) a port in use is an error, else another free port is taken and said so."""
    from devkit import seed

    note = ""
    try:
        server = s3.start_server(port, state_dir)
    except s3.PortInUse:
        if port_fixed:
            free = free_port_pair(port + 1)  # type: ignore[operator]
            raise SystemExit(f"cannot listen on 127.0.0.1:{port} for S3: the port is in use. Choose another: "
                             f"S3_PORT={free} make dev (or scripts/dev.py --s3-port {free}).") from None
        server, note = s3.start_server(None, state_dir), f"port {port} was in use"
    except RuntimeError as exc:  # e.g. the state folder is another server's
        raise SystemExit(str(exc)) from None
    try:
        s3.create_buckets(server.endpoint, buckets)
        if {s3.LOCAL_BUCKETS["UPLOADS_BUCKET"], s3.LOCAL_BUCKETS["GENERATIONS_BUCKET"]} <= set(buckets):
            seed.seed_objects(server.endpoint, uploads_bucket=s3.LOCAL_BUCKETS["UPLOADS_BUCKET"],
                              generations_bucket=s3.LOCAL_BUCKETS["GENERATIONS_BUCKET"])
    except BaseException:
        server.stop()
        raise
    return server, note


def free_port_pair(start: int) -> int:
    """The first port from ``start`` that is free with the next one (the runner's and S3's)."""
    for port in range(max(start, 1024), 65535):
        if s3.port_free(port) and s3.port_free(port + 1):
            return port
    return start


def start_services(buckets: list[str], *, s3_port: int | None = None, s3_port_fixed: bool = True,
                   s3_state: Path | None = None, fakes: bool = True) -> Services:
    """Postgres (migrated and seeded) and moto S3 (with ``buckets`` and the demo objects;
    its objects kept in ``s3_state`` when given, else in memory), started in parallel,
    and the Paymob and Stripe fakes (threads of this process)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        database = pool.submit(_start_database)
        storage = pool.submit(start_s3, buckets, s3_port, port_fixed=s3_port is not None and s3_port_fixed,
                              state_dir=s3_state)
        moto, note = storage.result()  # on an error, leaving the pool waits for the database
        try:
            url, source, applied, seeded = database.result()
        except BaseException:
            moto.stop()
            raise
    services = Services(url, source, moto.endpoint, buckets, applied, seeded, moto, note)
    if fakes:
        from devkit import fake_paymob, fake_revenuecat, fake_stripe

        services.paymob = fake_paymob.FakePaymob().start()
        services.stripe = fake_stripe.FakeStripe().start()
        services.revenuecat = fake_revenuecat.FakeRevenueCat().start()
    return services


def connect_checkout_pages(runner: Runner, services: Services) -> None:
    """Tell the fakes' checkout pages what to sign their webhooks with and where Stripe's
    go (the webhook functions' own settings and URL; Paymob sends to each intention's
    notification_url, as Paymob does)."""
    def first(env: dict[str, str], name: str) -> str | None:
        return next((part.strip() for part in env.get(name, "").split(",") if part.strip()), None)

    paymob_fn = runner.functions.get(WEBHOOK_FUNCTIONS["paymob"])
    if services.paymob is not None and paymob_fn is not None:
        services.paymob.hmac_secret = first(runner.function_env(paymob_fn), "PAYMOB_HMAC_SECRET")
    stripe_fn = runner.functions.get(WEBHOOK_FUNCTIONS["stripe"])
    if services.stripe is not None and stripe_fn is not None:
        services.stripe.webhook_secret = first(runner.function_env(stripe_fn), "STRIPE_WEBHOOK_SECRET")
        services.stripe.webhook_url = f"{runner.base_url}/{stripe_fn.name}/" if stripe_fn.url else None


def redact_url(url: str) -> str:
    """A connection URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def stop_embedded_postgres() -> str:
    """Stop the embedded server cleanly (its data stays in .local/pgdata)."""
    from devkit import postgres

    if not postgres.stop_embedded():
        return "the embedded Postgres is not running"
    return f"stopped the embedded Postgres (data kept in {relative(postgres.DEFAULT_DATA_DIR)})"
