"""The local runner's settings: its port and env file, and the local values of secrets and
provider settings that functions get when neither the shell nor env.local.json sets them."""

from __future__ import annotations

from pathlib import Path

from devkit import ROOT

DEFAULT_PORT = 3000
DEFAULT_ENV_FILE = ROOT / "env.local.json"
#: Where `make dev` keeps the local S3's objects between runs (next to .local/pgdata).
DEFAULT_S3_STATE = ROOT / ".local" / "s3"
#: Used when neither the shell nor env.local.json sets JWT_SECRET; long enough for HS256.
LOCAL_JWT_SECRET = "local-dev-jwt-secret-not-for-production-000"
#: Local values for the secrets that verify incoming requests, so sample webhook events
#: can be signed with known values; the shell or env.local.json override them.
LOCAL_SECRETS = {
    "JWT_SECRET": LOCAL_JWT_SECRET,
    "PAYMOB_HMAC_SECRET": "local-paymob-hmac-secret",
    "STRIPE_WEBHOOK_SECRET": "whsec_local_stripe_webhook_secret",
    "REVENUECAT_WEBHOOK_AUTH": "local-revenuecat-webhook-auth",
}
#: Process variables a worker inherits (the rest of its environment is the function's).
PASSTHROUGH = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SSL_CERT_FILE",
               "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "XDG_RUNTIME_DIR")
#: Settings taken from the shell when set there (secrets and provider endpoints).
SHELL_SETTINGS = ("OPENAI_BASE_URL", "PAYMOB_API_URL", "STRIPE_API_BASE", "REVENUECAT_API_URL")
#: The payment providers' APIs are local fakes (devkit.fake_paymob, devkit.fake_stripe,
#: devkit.fake_revenuecat) unless you configure the provider's secret key (shell or env.local.json): then the
#: settings that point at the fake are left out, and the template's (real) ones apply.
FAKE_PROVIDER_SETTINGS = {
    "PAYMOB_SECRET_KEY": ("PAYMOB_API_URL", "PAYMOB_PUBLIC_KEY", "PAYMOB_INTEGRATION_IDS", "PAYMOB_API_KEY"),
    "STRIPE_API_KEY": ("STRIPE_API_BASE",),
    "REVENUECAT_API_KEY": ("REVENUECAT_API_URL",),
}
LOCAL_PAYMOB_KEYS = {"PAYMOB_SECRET_KEY": "local-paymob-secret-key", "PAYMOB_PUBLIC_KEY": "pk_test_local",
                     "PAYMOB_API_KEY": "local-paymob-api-key"}
LOCAL_REVENUECAT_API_KEY = "sk_local_revenuecat_key"
#: The functions that receive each provider's webhooks: the fakes' checkout pages sign
#: with their secret and send to their URL.
WEBHOOK_FUNCTIONS = {"paymob": "paymob-webhook", "stripe": "stripe-webhook"}
LOCAL_STRIPE_API_KEY = "sk_test_local_stripe_key"


def relative(path: Path) -> str:
    """``path`` as shown to you: relative to the working directory when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
