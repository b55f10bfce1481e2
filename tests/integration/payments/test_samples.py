"""The sample events under events/ are realistic and usable: checkout's run against the
fakes with a real token; the webhooks' verify as committed (Paymob) or once re-signed
by scripts/sign-webhook (Stripe: their timestamps are old by design)."""

import json
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader

import pytest

from common import auth
from devkit import ROOT
from tests.integration.payments.helpers import PAYMOB_SECRET, STRIPE_SECRET, call, new_user

EVENTS = ROOT / "events"
SCRIPT = ROOT / "scripts" / "sign-webhook"


def sign_webhook():
    """scripts/sign-webhook as a module (it has no .py suffix)."""
    loader = SourceFileLoader("sign_webhook", str(SCRIPT))
    module = module_from_spec(spec_from_loader("sign_webhook", loader))
    loader.exec_module(module)
    return module


def load(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", ["get-products", "paymob", "stripe", "revenuecat-sync"])
def test_checkout_samples_run_with_a_real_token(name):
    event = load(EVENTS / "checkout" / f"{name}.json")
    event["headers"]["authorization"] = f"Bearer {auth.mint_token(new_user())}"
    status, body = call("checkout", event)
    assert status == (201 if name in ("paymob", "stripe") else 200), body


@pytest.mark.parametrize("path", sorted((EVENTS / "paymob-webhook").glob("*.json")), ids=lambda p: p.stem)
def test_paymob_samples_verify(path, monkeypatch):
    if path.stem == "published-sample":
        monkeypatch.setenv("PAYMOB_HMAC_SECRET", "04DC1A9490B8CC2094C011FC055ADCDB")
    status, body = call("paymob-webhook", load(path))
    assert status == 200, body
    # Re-signed with another secret, they verify with that one only
    resigned = sign_webhook().sign(load(path), "another-local-secret", None)
    monkeypatch.setenv("PAYMOB_HMAC_SECRET", "another-local-secret")
    assert call("paymob-webhook", resigned)[0] == 200
    monkeypatch.setenv("PAYMOB_HMAC_SECRET", PAYMOB_SECRET)
    assert call("paymob-webhook", resigned)[0] == 401


@pytest.mark.parametrize("path", sorted((EVENTS / "stripe-webhook").glob("*.json")), ids=lambda p: p.stem)
def test_stripe_samples_verify_once_re_signed(path):
    event = load(path)
    status, body = call("stripe-webhook", event)
    assert (status, body["error"]["code"]) == (400, "invalid_signature")  # signed long ago
    status, body = call("stripe-webhook", sign_webhook().sign(event, None, None))
    assert status == 200, body


def test_the_script_rewrites_files_with_the_local_secrets(tmp_path):
    stripe_file = tmp_path / "stripe.json"
    stripe_file.write_text((EVENTS / "stripe-webhook" / "invoice-paid.json").read_text())
    paymob_file = tmp_path / "paymob.json"
    paymob_event = load(EVENTS / "paymob-webhook" / "transaction-paid.json")
    paymob_event["queryStringParameters"]["hmac"] = "0" * 128
    paymob_file.write_text(json.dumps(paymob_event))
    env = {"PATH": "/usr/bin:/bin", "PAYMOB_HMAC_SECRET": PAYMOB_SECRET,
           "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET}
    done = subprocess.run([sys.executable, str(SCRIPT), "-w", str(stripe_file), str(paymob_file)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert call("stripe-webhook", load(stripe_file))[0] == 200
    assert call("paymob-webhook", load(paymob_file))[0] == 200
