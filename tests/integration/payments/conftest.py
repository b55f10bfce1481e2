"""Fixtures for the payment functions: the Paymob, Stripe and RevenueCat fakes (one server each
per session, reset per test), the settings the three functions read, and a clean
database."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from common import config, db
from devkit import fake_paymob, fake_revenuecat, fake_stripe
from tests.integration.payments import helpers


@pytest.fixture(scope="session")
def _paymob_server() -> Iterator[fake_paymob.FakePaymob]:
    fake = fake_paymob.FakePaymob().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def _stripe_server() -> Iterator[fake_stripe.FakeStripe]:
    fake = fake_stripe.FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def _revenuecat_server() -> Iterator[fake_revenuecat.FakeRevenueCat]:
    fake = fake_revenuecat.FakeRevenueCat().start()
    yield fake
    fake.stop()


def _clear_settings() -> None:
    config.settings.cache_clear()
    checkout_settings = sys.modules.get("checkout.settings")
    if checkout_settings is not None:
        checkout_settings.settings.cache_clear()


@pytest.fixture(autouse=True)
def payments_env(clean_db, _paymob_server, _stripe_server, _revenuecat_server,
                 monkeypatch: pytest.MonkeyPatch):
    """Every test here: a clean database, fresh fakes and the local payment settings."""
    _paymob_server.reset()
    _stripe_server.reset()
    _revenuecat_server.reset()
    for name, value in helpers.ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PAYMOB_API_URL", _paymob_server.base_url)
    monkeypatch.setenv("STRIPE_API_BASE", _stripe_server.base_url)
    monkeypatch.setenv("REVENUECAT_API_URL", _revenuecat_server.base_url)
    _clear_settings()
    db.reset()
    yield
    db.reset()
    monkeypatch.undo()
    _clear_settings()


@pytest.fixture
def paymob(_paymob_server) -> fake_paymob.FakePaymob:
    return _paymob_server


@pytest.fixture
def stripe_api(_stripe_server) -> fake_stripe.FakeStripe:
    return _stripe_server


@pytest.fixture
def revenuecat_api(_revenuecat_server) -> fake_revenuecat.FakeRevenueCat:
    return _revenuecat_server
