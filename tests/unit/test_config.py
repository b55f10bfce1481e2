"""Settings: typed values from the environment, secrets by value or by reference, and a
missing required setting that names its variable."""

import pytest

from common import config
from common.errors import ConfigError


@pytest.fixture(autouse=True)
def fresh_settings():
    config.settings.cache_clear()
    yield
    config.settings.cache_clear()


def test_missing_required_secret_names_the_variable(monkeypatch):
    # Given no Stripe key in any form
    for suffix in ("", "_SECRET_ARN", "_PARAM"):
        monkeypatch.delenv(f"STRIPE_API_KEY{suffix}", raising=False)
    # When code that needs it asks for it
    with pytest.raises(ConfigError) as err:
        config.require_secret("STRIPE_API_KEY")
    # Then the message names the variable and its reference forms
    assert "STRIPE_API_KEY" in str(err.value)
    assert "STRIPE_API_KEY_SECRET_ARN" in str(err.value)


def test_missing_required_setting_names_the_variable(monkeypatch):
    monkeypatch.delenv("UPLOADS_BUCKET", raising=False)
    with pytest.raises(ConfigError, match="UPLOADS_BUCKET is not set"):
        config.settings().require("UPLOADS_BUCKET")


def test_invalid_setting_names_the_variable_not_the_value(monkeypatch):
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_MS", "not-a-number-s3cr3t")
    with pytest.raises(ConfigError) as err:
        config.settings()
    assert "DB_STATEMENT_TIMEOUT_MS" in str(err.value)
    assert "s3cr3t" not in str(err.value)


def test_plain_values_and_provider_defaults(monkeypatch):
    monkeypatch.setenv("STAGE", "prod")
    monkeypatch.delenv("STRIPE_API_BASE", raising=False)
    s = config.settings()
    assert s.STAGE == "prod"
    assert s.STRIPE_API_BASE == "https://api.stripe.com"
    assert s.PAYMOB_API_URL == "https://accept.paymob.com"
    assert s.REVENUECAT_API_URL == "https://api.revenuecat.com"


def test_secret_by_plain_value_and_rotation_list(monkeypatch):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_new, whsec_old")
    assert config.secret_list("STRIPE_WEBHOOK_SECRET") == ["whsec_new", "whsec_old"]


def test_secret_by_ssm_reference_resolves_through_powertools(monkeypatch, s3_endpoint):
    # Given the key stored in SSM (moto's server stands in for AWS) and only its name set
    import boto3

    ssm = boto3.client("ssm", endpoint_url=s3_endpoint, region_name="us-east-1")
    ssm.put_parameter(Name="/backend/test/OPENAI_API_KEY", Value="sk-from-ssm-123", Type="SecureString",
                      Overwrite=True)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY_PARAM", "/backend/test/OPENAI_API_KEY")
    # Then the value comes back decrypted
    assert config.secret("OPENAI_API_KEY") == "sk-from-ssm-123"


def test_secret_by_secrets_manager_reference(monkeypatch, s3_endpoint):
    import boto3

    sm = boto3.client("secretsmanager", endpoint_url=s3_endpoint, region_name="us-east-1")
    arn = sm.create_secret(Name=f"paymob-{id(monkeypatch)}", SecretString="hmac-from-sm")["ARN"]
    monkeypatch.delenv("PAYMOB_HMAC_SECRET", raising=False)
    monkeypatch.setenv("PAYMOB_HMAC_SECRET_SECRET_ARN", arn)
    assert config.secret("PAYMOB_HMAC_SECRET") == "hmac-from-sm"


def test_unknown_secret_name_is_a_programming_error():
    with pytest.raises(ValueError):
        config.secret("NOT_A_SECRET")


@pytest.mark.parametrize(("threshold", "proxy", "expected"), [
    (None, None, 1),      # direct: a statement run twice is prepared
    (None, "proxy.example", None),  # behind RDS Proxy: never (it would pin)
    ("off", None, None),
    ("off", "proxy.example", None),
    ("0", None, 0),
    ("5", "proxy.example", 5),  # explicit wins (a pooler that tracks prepared statements)
])
def test_prepare_threshold_follows_the_proxy_unless_set(monkeypatch, threshold, proxy, expected):
    for name, value in (("DB_PREPARE_THRESHOLD", threshold), ("DATABASE_PROXY_HOST", proxy)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert config.settings().prepare_threshold() == expected


@pytest.mark.parametrize("threshold", ["-1", "on", "1.5"])
def test_prepare_threshold_refuses_anything_else(monkeypatch, threshold):
    monkeypatch.setenv("DB_PREPARE_THRESHOLD", threshold)
    with pytest.raises(ConfigError, match="DB_PREPARE_THRESHOLD"):
        config.settings()
