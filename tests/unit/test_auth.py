"""Bearer JWT authentication: HS256 with the shared secret, RS256/ES256 from a JWKS served
by a local HTTP server, claim checks, and every known algorithm-confusion trick refused."""

import base64
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from common import auth, config
from common.errors import ConfigError, Unauthorized, Unavailable
from common.observability import logger

USER = uuid.UUID("6f1c2b1e-3d4a-4c5b-9e8f-0a1b2c3d4e5f")
SECRET = "test-jwt-secret-0123456789abcdef"  # tests/conftest.py's JWT_SECRET


@pytest.fixture(autouse=True)
def auth_settings(monkeypatch):
    """Only the HS256 secret configured, unless a test says otherwise."""
    monkeypatch.setenv("JWT_SECRET", SECRET)
    for name in ("JWT_JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE"):
        monkeypatch.delenv(name, raising=False)
    config.settings.cache_clear()
    auth._jwks_client.cache_clear()
    yield monkeypatch
    config.settings.cache_clear()
    auth._jwks_client.cache_clear()


@pytest.fixture
def records():
    """The log records of this test, as handed to the logger (before any redaction)."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    handler = Keep()
    logging.getLogger(logger.name).addHandler(handler)
    yield seen
    logging.getLogger(logger.name).removeHandler(handler)


@pytest.fixture
def reasons(records):
    """The reasons logged for refusals so far in this test (what an operator sees)."""
    return lambda: [getattr(r, "reason", "") for r in records]


def configure(monkeypatch, **env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config.settings.cache_clear()


def claims(**overrides):
    now = int(time.time())
    return {"sub": str(USER), "iat": now, "nbf": now, "exp": now + 600, **overrides}


def bearer(token: str) -> str:
    return f"Bearer {token}"


def rejected(header) -> Unauthorized:
    with pytest.raises(Unauthorized) as err:
        auth.authenticate(header)
    assert err.value.status == 401 and err.value.code == "unauthorized"
    assert err.value.message == "missing or invalid credentials"
    return err.value


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict, payload: dict, key: bytes | None) -> str:
    """A token built by hand, as an attacker would (PyJWT refuses to make these)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


# --- HS256 --------------------------------------------------------------------------------


def test_hs256_token_authenticates():
    # Given a token minted with the configured secret
    token = auth.mint_token(USER)
    # When it is presented
    principal = auth.authenticate(bearer(token))
    # Then the caller is its sub
    assert principal.user_id == USER
    assert principal.claims["sub"] == str(USER)
    assert auth.authenticate(f"bearer  {token} ").user_id == USER


@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz",
                                    "Token abc", "Bearer not-a-jwt", "Bearer a.b.c"])
def test_missing_or_malformed_credentials(header):
    rejected(header)


@pytest.mark.parametrize("secret", ["some-other-secret-0123456789abcdef", SECRET])
def test_neither_message_nor_log_echoes_the_token(secret, records):
    # Given a refused token (bad signature, or a non-UUID sub)
    token = jwt.encode(claims(sub="alice"), secret, algorithm="HS256")
    err = rejected(bearer(token))
    # Then the error and the log record say why without the token or its parts
    logged = "".join(repr(vars(r)) for r in records)
    assert records and "reason" in logged
    for part in (token, *token.split(".")):
        assert part not in str(err) and part not in logged


def test_expired_token_is_rejected(reasons):
    rejected(bearer(auth.mint_token(USER, ttl_s=-(auth.LEEWAY_S + 5))))
    assert reasons() == ["invalid token"]


def test_small_clock_skew_is_tolerated():
    now = int(time.time())
    token = jwt.encode(claims(nbf=now + 5, iat=now + 5), SECRET, algorithm="HS256")
    assert auth.authenticate(bearer(token)).user_id == USER


def test_token_not_yet_valid_is_rejected():
    rejected(bearer(jwt.encode(claims(nbf=int(time.time()) + 3600), SECRET, algorithm="HS256")))


@pytest.mark.parametrize("missing", ["exp", "sub"])
def test_required_claims(missing):
    payload = claims()
    del payload[missing]
    rejected(bearer(jwt.encode(payload, SECRET, algorithm="HS256")))


@pytest.mark.parametrize("sub", ["42", "user@example.com", "", "6f1c2b1e-3d4a-4c5b-9e8f"])
def test_sub_must_be_a_uuid(sub, reasons):
    rejected(bearer(jwt.encode(claims(sub=sub), SECRET, algorithm="HS256")))
    assert reasons() == ["sub is not a UUID"]


def test_wrong_secret_is_rejected():
    rejected(bearer(auth.mint_token(USER, secret="another-secret-0123456789abcdefgh")))


def test_secret_rotation(auth_settings):
    # Given a new secret put in front of the old one
    old_token = auth.mint_token(USER)
    configure(auth_settings, JWT_SECRET=f"new-jwt-secret-0123456789abcdef01,{SECRET}")
    # Then tokens signed with either verify, and new tokens use the new one
    assert auth.authenticate(bearer(old_token)).user_id == USER
    new_token = auth.mint_token(USER)
    configure(auth_settings, JWT_SECRET="new-jwt-secret-0123456789abcdef01")
    assert auth.authenticate(bearer(new_token)).user_id == USER
    rejected(bearer(old_token))


def test_issuer_and_audience_enforced_when_configured(auth_settings):
    configure(auth_settings, JWT_ISSUER="https://auth.example.test", JWT_AUDIENCE="photo-app")
    # A token minted with the configured values passes
    assert auth.authenticate(bearer(auth.mint_token(USER))).user_id == USER
    # A wrong issuer, a wrong audience, or neither claim, does not
    rejected(bearer(auth.mint_token(USER, issuer="https://evil.example.test")))
    rejected(bearer(auth.mint_token(USER, audience="journal-app")))
    rejected(bearer(jwt.encode(claims(), SECRET, algorithm="HS256")))


def test_empty_issuer_and_audience_are_not_enforced(auth_settings):
    # Given the template's defaults: JWT_ISSUER and JWT_AUDIENCE set, but empty
    configure(auth_settings, JWT_ISSUER="", JWT_AUDIENCE="")
    # Then a token without iss/aud passes, as with the variables unset
    assert auth.authenticate(bearer(jwt.encode(claims(), SECRET, algorithm="HS256"))).user_id == USER
    assert auth.authenticate(bearer(auth.mint_token(USER))).user_id == USER


def test_alg_none_is_rejected(reasons):
    # PyJWT makes unsigned tokens on request; variants are made by hand
    unsigned = jwt.encode(claims(), None, algorithm="none")
    rejected(bearer(unsigned))
    for alg in ("None", "NONE", "nOnE"):
        rejected(bearer(hand_made({"alg": alg, "typ": "JWT"}, claims(), None)))
    assert reasons() == ["algorithm not allowed"] * 4


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_hmac_algorithms_are_rejected(alg):
    rejected(bearer(jwt.encode(claims(), SECRET * 2, algorithm=alg)))


def test_no_key_configured_is_a_configuration_error(auth_settings):
    auth_settings.delenv("JWT_SECRET")
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        auth.authenticate(bearer(auth.mint_token(USER, secret=SECRET)))


# --- RS256 / ES256 from a JWKS ------------------------------------------------------------


class Keys:
    """An RSA and an EC P-256 key pair, published as a JWK Set."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        rsa_jwk = {**RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True), "kid": "rsa-1",
                   "alg": "RS256", "use": "sig"}
        ec_jwk = {**ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True), "kid": "ec-1"}  # alg inferred
        self.jwks = {"keys": [rsa_jwk, ec_jwk]}
        self.rsa_public_pem = self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class JwksServer:
    """A JWKS endpoint on localhost that counts how often it is fetched."""

    def __init__(self, document: dict):
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.fetches += 1
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def keys():
    return Keys()


@pytest.fixture(scope="module")
def jwks_server(keys):
    server = JwksServer(keys.jwks)
    yield server
    server.stop()


@pytest.fixture
def with_jwks(auth_settings, jwks_server):
    """JWT_JWKS_URL configured (and JWT_SECRET still set, to prove it is then ignored)."""
    configure(auth_settings, JWT_JWKS_URL=jwks_server.url)
    return jwks_server


def test_rs256_and_es256_from_jwks(with_jwks, keys):
    # Given tokens signed by the identity provider's RSA and EC keys
    rs = jwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(claims(), keys.ec, algorithm="ES256", headers={"kid": "ec-1"})
    # Then both authenticate
    assert auth.authenticate(bearer(rs)).user_id == USER
    assert auth.authenticate(bearer(es)).user_id == USER


def test_jwks_is_fetched_once_per_container(with_jwks, keys):
    before = with_jwks.fetches
    for _ in range(5):
        token = jwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
        auth.authenticate(bearer(token))
    assert with_jwks.fetches - before == 1


def test_hs256_signed_with_the_public_key_is_rejected(with_jwks, keys, reasons):
    # Given the classic confusion attack: HS256 keyed with the RSA public key (PEM and JWK
    # forms), naming the RSA key's kid
    forged = [hand_made({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(), key)
              for key in (keys.rsa_public_pem, keys.rsa_public_pem.strip(),
                          json.dumps(keys.jwks["keys"][0]).encode())]
    # Then every variant is refused
    for token in forged:
        rejected(bearer(token))
    assert reasons() == ["algorithm not allowed"] * len(forged)


def test_shared_secret_is_ignored_when_jwks_is_configured(with_jwks, reasons):
    rejected(bearer(auth.mint_token(USER, secret=SECRET)))
    assert reasons() == ["algorithm not allowed"]


def test_token_algorithm_must_match_its_key(with_jwks, keys, reasons):
    # An ES256 token naming the RSA key, and an RS256 token naming the EC key
    es_on_rsa = jwt.encode(claims(), keys.ec, algorithm="ES256", headers={"kid": "rsa-1"})
    rs_on_ec = jwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "ec-1"})
    rejected(bearer(es_on_rsa))
    rejected(bearer(rs_on_ec))
    assert reasons() == ["token algorithm does not match its key"] * 2


def test_unknown_kid_and_foreign_key_are_rejected(with_jwks, keys, reasons):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rejected(bearer(jwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "rsa-9"})))
    rejected(bearer(jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "rsa-1"})))
    assert reasons() == ["no usable signing key", "signature does not verify"]


def test_jwks_claims_are_checked_too(auth_settings, with_jwks, keys):
    def rs(**overrides):
        return jwt.encode(claims(**overrides), keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})

    rejected(bearer(rs(exp=int(time.time()) - 3600)))
    rejected(bearer(rs(sub="not-a-uuid")))
    configure(auth_settings, JWT_AUDIENCE="photo-app")
    rejected(bearer(rs()))
    assert auth.authenticate(bearer(rs(aud="photo-app"))).user_id == USER


def test_rs256_is_rejected_when_only_the_secret_is_configured(keys):
    rejected(bearer(jwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})))


def test_unreachable_jwks_is_unavailable_not_unauthorized(auth_settings, keys):
    # Given a JWKS URL where nothing listens
    server = JwksServer({"keys": []})
    server.stop()
    configure(auth_settings, JWT_JWKS_URL=server.url)
    token = jwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    # Then the caller gets a 503 to retry, not a 401 that blames their token
    with pytest.raises(Unavailable) as err:
        auth.authenticate(bearer(token))
    assert err.value.status == 503


# --- scripts/token ------------------------------------------------------------------------

TOKEN_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "token"


def run_token_script(*args, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("JWT_")}
    # no env.local.json: a developer's own file must not change what is tested
    return subprocess.run([sys.executable, str(TOKEN_SCRIPT), *args, "--env-file", "none"],
                          env={**base, **env}, capture_output=True, text=True, timeout=30)


def test_token_script_mints_a_token_the_functions_accept():
    done = run_token_script(str(USER), "--ttl", "120", JWT_SECRET=SECRET)
    assert done.returncode == 0, done.stderr
    assert auth.authenticate(bearer(done.stdout.strip())).user_id == USER
    demo = run_token_script(JWT_SECRET=SECRET)
    demo_user = uuid.UUID("00000000-0000-4000-8000-00000000de60")
    assert auth.authenticate(bearer(demo.stdout.strip())).user_id == demo_user
