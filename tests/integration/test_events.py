"""Every sample event under events/ works as committed, through the machinery of
scripts/invoke (devkit.runner.Runner: worker processes, the template's environment, the
runner's local secrets), against the demo data that `make dev` seeds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path

import boto3
import pytest

from devkit import ROOT, fake_paymob, fake_revenuecat, fake_stripe, s3, samples, seed
from devkit import runner as rt
from devkit.runner.services import Services
from devkit.runner.settings import LOCAL_JWT_SECRET, LOCAL_SECRETS

#: Samples that are refused locally on purpose, with the status they get.
REFUSED = {
    # Paymob's published sample verifies with Paymob's published secret only (docs/payments.md)
    ("paymob-webhook", "published-sample"): 401,
}
SAMPLES = list(samples.all_samples())


def sign_webhook():
    loader = SourceFileLoader("sign_webhook", str(ROOT / "scripts" / "sign-webhook"))
    module = module_from_spec(spec_from_loader("sign_webhook", loader))
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def local(tmp_path_factory, database_url: str, s3_endpoint: str, _openai_server) -> Iterator[rt.Runner]:
    """A runner with make dev's services: the test database seeded, moto with the demo
    objects, the payment fakes; the fake OpenAI for process-image (its AI sample)."""
    empty_tables(database_url)
    seed.seed(database_url)
    seed.seed_objects(s3_endpoint, uploads_bucket=s3.LOCAL_BUCKETS["UPLOADS_BUCKET"],
                      generations_bucket=s3.LOCAL_BUCKETS["GENERATIONS_BUCKET"])
    paymob, stripe = fake_paymob.FakePaymob().start(), fake_stripe.FakeStripe().start()
    revenuecat = fake_revenuecat.FakeRevenueCat().start()
    services = Services(database_url, "test", s3_endpoint, list(s3.LOCAL_BUCKETS.values()),
                           paymob=paymob, stripe=stripe, revenuecat=revenuecat)
    env_file = tmp_path_factory.mktemp("env") / "env.local.json"
    env_file.write_text(json.dumps({
        "Parameters": {"JWT_SECRET": LOCAL_JWT_SECRET},  # the samples' tokens (the shell has the tests')
        "process-image": {"OPENAI_API_KEY": "sk-test-local", "OPENAI_BASE_URL": _openai_server.base_url},
    }))
    runner = rt.Runner(env_file=env_file, port=None, services_env=services.env(), sink=lambda _line: None)
    yield runner
    runner.stop()
    services.stop()
    # Leave the session's database and S3 as other tests expect them: without the demo data
    empty_tables(database_url)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.delete_object(Bucket=s3.LOCAL_BUCKETS["UPLOADS_BUCKET"], Key=seed.DEMO_UPLOAD_KEY)
    client.delete_object(Bucket=s3.LOCAL_BUCKETS["GENERATIONS_BUCKET"], Key=seed.DEMO_RESULT_KEY)
    client.delete_object(Bucket=s3.LOCAL_BUCKETS["UPLOADS_BUCKET"], Key=seed.DEMO_VOICE_NOTE_KEY)


def empty_tables(database_url: str) -> None:
    import psycopg

    from tests.conftest import MUTABLE_TABLES

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(MUTABLE_TABLES)} RESTART IDENTITY CASCADE")


def test_every_function_has_samples_and_every_client_sample_a_lasting_token() -> None:
    import jwt

    assert {function for function, _ in SAMPLES} == set(rt.Runner(port=None).functions)
    for function, path in SAMPLES:
        event = json.loads(path.read_text())
        if function in samples.CLIENT_FUNCTIONS and "requestContext" in event:
            token = event["headers"]["authorization"].split(" ", 1)[1]
            claims = jwt.decode(token, LOCAL_JWT_SECRET, algorithms=["HS256"])
            assert claims["exp"] >= samples.TOKEN_EXPIRES.timestamp() - 86400, path
            demo_users = (seed.DEMO_USER_ID, seed.PARTNER_USER_ID, seed.SOLO_USER_ID, seed.NEWCOMER_USER_ID,
                          seed.LEAVER_USER_ID)
            assert claims["sub"] in map(str, demo_users), path


@pytest.mark.parametrize(("function", "path"), SAMPLES, ids=[f"{f}/{p.stem}" for f, p in SAMPLES])
def test_sample_runs_as_committed(local: rt.Runner, function: str, path: Path) -> None:
    # Given the sample (a Stripe one re-signed: its signature's timestamp must be recent)
    event = json.loads(path.read_text())
    if function == "stripe-webhook":
        event = sign_webhook().sign(event, LOCAL_SECRETS["STRIPE_WEBHOOK_SECRET"], None)
    # When scripts/invoke's machinery runs it
    inv = local.invoke(function, event)
    # Then the function succeeds: a 2xx answer for URL events (or the intended refusal)
    assert inv.ok, inv.error
    if "requestContext" in event:  # a Function URL request (not a scheduled job's event)
        status, refused = inv.result["statusCode"], REFUSED.get((function, path.stem))
        assert status == refused if refused else 200 <= status < 300, inv.result["body"][:300]
