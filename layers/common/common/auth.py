"""Bearer JWT authentication for the client-facing function URLs (PyJWT).

Key source, chosen by configuration:
- ``JWT_JWKS_URL`` set: RS256/ES256 tokens signed by a key from that JWK Set (an
  identity provider). The JWK Set is fetched on first use and cached per container
  (PyJWKClient, refreshed every ``JWKS_CACHE_S`` seconds and on an unknown ``kid``, with
  the client's cooldown). ``JWT_SECRET`` is then ignored.
- otherwise ``JWT_SECRET``: HS256 tokens (local runs, tests, a first-party issuer). The
  secret may hold several comma-separated values; any verifies, the first one mints.

Algorithm confusion is impossible by construction: the token's ``alg`` must be in the
allow-list of the configured key source before any key is chosen (so ``none``, and HS256
when keys are public, are refused), a JWKS key only verifies its own algorithm, and
``jwt.decode`` is given exactly that one algorithm.

Claims: ``exp`` and ``sub`` are required; ``exp``/``nbf``/``iat`` must be numbers and
are checked with ``LEEWAY_S`` of clock skew; ``JWT_MAX_LIFETIME_S``, when set, bounds
``exp - iat``; ``iss``/``aud`` are required and checked when
``JWT_ISSUER``/``JWT_AUDIENCE`` are set (a token naming an audience is refused when none is
configured: PyJWT's default, we cannot tell it was meant for us). ``sub`` must be a UUID:
it is the ``users.id``; ``ensure_user`` provisions that row on first sight, and refuses
(``AccountDeleted``, 401) an id whose account was deleted.

Every refusal raises ``Unauthorized`` with one generic message; the log says why, never
with the token. PyJWT is imported on first use (~100 ms with cryptography).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NoReturn

from common import config, db, ratelimit
from common.errors import AccountDeleted, ConfigError, Unauthorized, Unavailable
from common.observability import logger

if TYPE_CHECKING:
    from jwt import PyJWKClient

#: Algorithms accepted per key source; anything else is refused before a key is chosen.
JWKS_ALGORITHMS = frozenset({"RS256", "ES256"})
SECRET_ALGORITHMS = frozenset({"HS256"})
#: Allowed clock skew, in seconds, for exp / nbf / iat.
LEEWAY_S = 30
JWKS_CACHE_S = 300
JWKS_TIMEOUT_S = 5

_MESSAGE = "missing or invalid credentials"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: ``user_id`` is the token's ``sub``."""

    user_id: uuid.UUID
    claims: dict[str, Any] = field(repr=False)  # may hold personal data: kept out of reprs


def _reject(reason: str, **details: Any) -> NoReturn:
    logger.info("authentication rejected", extra={"reason": reason, **details})
    raise Unauthorized(_MESSAGE) from None


def _bearer_token(header: str | None) -> str:
    if not header or not header.strip():
        _reject("missing Authorization header")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        _reject("Authorization is not a Bearer credential")
    return token.strip()


@lru_cache(maxsize=4)
def _jwks_client(url: str) -> PyJWKClient:
    """One client (and so one cached JWK Set) per URL per container."""
    from jwt import PyJWKClient

    # cache_keys stays off: a key removed from the set must stop verifying at the next
    # refresh, which a per-kid cache would defeat.
    return PyJWKClient(url, cache_keys=False, cache_jwk_set=True, lifespan=JWKS_CACHE_S,
                       timeout=JWKS_TIMEOUT_S)


def _jwks_key(url: str, token: str, alg: str) -> Any:
    import jwt

    try:
        jwk = _jwks_client(url).get_signing_key_from_jwt(token)
    except jwt.PyJWKClientConnectionError:
        logger.error("JWKS endpoint unreachable", extra={"jwks_url": url})
        raise Unavailable("authentication is temporarily unavailable") from None
    except jwt.PyJWTError as exc:  # unknown kid, unusable key set, malformed token
        _reject("no usable signing key", error=type(exc).__name__)
    except ValueError:  # the endpoint answered something that is not JSON
        logger.error("JWKS endpoint returned an invalid document", extra={"jwks_url": url})
        raise Unavailable("authentication is temporarily unavailable") from None
    if jwk.algorithm_name != alg:  # a key verifies its own algorithm only
        _reject("token algorithm does not match its key", alg=alg, key_alg=jwk.algorithm_name)
    return jwk.key


def _secret_keys() -> list[str]:
    """The active JWT_SECRET values, newest first (comma-separated for rotation)."""
    keys = config.secret_list("JWT_SECRET")
    if not keys:
        raise ConfigError("JWT_SECRET is empty (and JWT_JWKS_URL is not set)")
    return keys


def authenticate(authorization_header: str | None) -> Principal:
    """The caller named by a valid ``Authorization: Bearer <JWT>``, else ``Unauthorized``."""
    import jwt

    token = _bearer_token(authorization_header)
    s = config.settings()
    try:
        alg = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        _reject("malformed token")
    jwks_url = s.JWT_JWKS_URL
    source = "jwks" if jwks_url else "secret"
    if alg not in (JWKS_ALGORITHMS if source == "jwks" else SECRET_ALGORITHMS):
        _reject("algorithm not allowed", alg=str(alg)[:10], key_source=source)
    keys = [_jwks_key(jwks_url, token, alg)] if jwks_url else _secret_keys()

    required = ["exp", "sub"] + ["iss"] * bool(s.JWT_ISSUER) + ["aud"] * bool(s.JWT_AUDIENCE)
    claims: dict[str, Any] | None = None
    for key in keys:
        try:
            # An empty JWT_ISSUER / JWT_AUDIENCE (the template's defaults) means "not
            # enforced": PyJWT would require an "iss" equal to "" for issuer="".
            claims = jwt.decode(token, key, algorithms=[alg], issuer=s.JWT_ISSUER or None,
                                audience=s.JWT_AUDIENCE or None, leeway=LEEWAY_S,
                                options={"require": required})
            break
        except jwt.InvalidSignatureError:
            continue  # the next active secret may have signed it
        except jwt.PyJWTError as exc:  # PyJWT's messages name the check, never the token
            _reject("invalid token", error=f"{type(exc).__name__}: {exc}"[:120], key_source=source)
    if claims is None:
        _reject("signature does not verify", key_source=source, keys_tried=len(keys))
    _check_times(claims, s.JWT_MAX_LIFETIME_S)
    try:
        user_id = uuid.UUID(claims["sub"])
    except (ValueError, TypeError, AttributeError):
        _reject("sub is not a UUID")
    return Principal(user_id=user_id, claims=claims)


def _check_times(claims: dict[str, Any], max_lifetime_s: int | None) -> None:
    """What PyJWT leaves open: ``exp``/``nbf``/``iat`` must be JSON numbers (RFC 7519's
    NumericDate; PyJWT also takes numeric strings), and, when ``JWT_MAX_LIFETIME_S`` is
    set, a token may live at most that long (from ``iat``, or from now without one)."""
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            _reject("time claim is not a number", claim=name)
    if max_lifetime_s is not None:
        start = claims.get("iat", time.time())
        if claims["exp"] - start > max_lifetime_s + LEEWAY_S:
            _reject("token lifetime exceeds JWT_MAX_LIFETIME_S", max_lifetime_s=max_lifetime_s)


# The user row is made on first sight. The email is kept only when no other user has it
# (users.email is UNIQUE, and a token's email claim must never block provisioning). A
# deleted account keeps its row (the tombstone), so it is never made again: the same
# statement says whether the row it found is one. (A row inserted now is invisible to the
# statement's own SELECT: ``deleted`` is then NULL.)
_PROVISION_USER = """
WITH made AS (
    INSERT INTO users (id, email)
    VALUES (%(id)s, (SELECT %(email)s::text WHERE NOT EXISTS (SELECT 1 FROM users WHERE email = %(email)s)))
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM made) AS created,
       (SELECT deleted_at IS NOT NULL FROM users WHERE id = %(id)s) AS deleted
"""


def ensure_user(user_id: uuid.UUID | str, email: str | None = None) -> bool:
    """Make the ``users`` row for an authenticated caller if it does not exist yet.

    Idempotent and safe under concurrency (one statement, ``ON CONFLICT DO NOTHING``);
    True when this call created the row. Call it after ``authenticate``. A deleted
    account raises ``AccountDeleted`` (401): its old tokens never bring it back.
    """
    params = {"id": uuid.UUID(str(user_id)), "email": email}
    row = db.one_row(db.execute(_PROVISION_USER, params, idempotent=True))
    if row["deleted"]:
        logger.info("authentication rejected", extra={"reason": "account deleted"})
        raise AccountDeleted("this account has been deleted")
    return bool(row["created"])


# What every client request does after its JWT verifies, in ONE round trip: count the
# request in the caller's rate-limit window (``ratelimit.HIT``'s upsert) and, within the
# limit only, provision the user row (``_PROVISION_USER``), then say whether the account
# is deleted. The transaction commits without waiting for its WAL flush
# (synchronous_commit off, for this statement only): a server crash may lose its last
# few hundred milliseconds of these writes, i.e. a few counted hits (a client gets that
# many extra requests once) and, rarely, a user row made in that instant, made again by
# the user's next request. Nothing durable can depend on a lost row: WAL is written in
# order, so any later synchronously committed write (a charge, a generation) flushes it
# first. A throttled request still changes nothing but its counter.
_ADMIT = f"""
WITH hit AS ({ratelimit.HIT}), made AS (
    INSERT INTO users (id, email)
    SELECT %(id)s, (SELECT %(email)s::text WHERE NOT EXISTS (SELECT 1 FROM users WHERE email = %(email)s))
     WHERE (SELECT hits FROM hit) <= %(limit)s
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT hit.hits, hit.reset_after,
       EXISTS (SELECT 1 FROM made) AS created,
       (SELECT deleted_at IS NOT NULL FROM users WHERE id = %(id)s) AS deleted,
       set_config('synchronous_commit', 'off', true) AS async_commit
  FROM hit
"""


_ASYNC_COMMIT = ",\n       set_config('synchronous_commit', 'off', true) AS async_commit"
_ADMIT_IN_TRANSACTION = _ADMIT.replace(_ASYNC_COMMIT, "")


def admit(principal: Principal, route: str, *, limit: int | None = None) -> bool:
    """Count the authenticated caller's request on ``route`` against its rate limit
    (``TooManyRequests``, 429, past ``limit`` a minute, default RATE_LIMIT_PER_MINUTE),
    then provision its users row like ``ensure_user`` (``AccountDeleted`` for a deleted
    account): what ``ratelimit.hit`` and ``ensure_user`` do, in one statement. True when
    this request created the user row."""
    return bool(_admit(principal, route, limit, {}, {})["created"])


def admit_along(principal: Principal, route: str, queries: dict[str, str], params: dict[str, Any], *,
                limit: int | None = None) -> dict[str, Any]:
    """``admit``, and in the same statement (one round trip, one snapshot) the scalar
    ``queries`` (name -> a SELECT of one value, written with ``params``): a route whose
    first read is known before the admission pays no round trip of its own for it.
    Returns ``{name: result}``; a refused request (429, a deleted account) raises as
    ``admit`` does, whatever the queries found. A user row made by this statement is
    not yet visible to them (they see the statement's snapshot)."""
    row = _admit(principal, route, limit, queries, params)
    return {name: row[name] for name in queries}


_ADMIT_COLUMNS = frozenset({"hits", "reset_after", "created", "deleted", "async_commit"})
#: The admission with extra columns, per (statement, queries): a route's are constant.
_along_sql: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}


def _admit(principal: Principal, route: str, limit: int | None, queries: dict[str, str],
           along: dict[str, Any]) -> dict[str, Any]:
    limit = ratelimit.default_limit() if limit is None else limit
    email = principal.claims.get("email")
    params = {"subject": str(principal.user_id), "route": route, "window": ratelimit.WINDOW_SECONDS,
              "limit": limit, "id": principal.user_id, "email": email if isinstance(email, str) else None}
    # Asynchronous commit only as a statement of its own: inside a caller's transaction the
    # setting would last to that transaction's commit and cover its writes too.
    import psycopg

    idle = db.connection().info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    sql = _ADMIT if idle else _ADMIT_IN_TRANSACTION
    if queries:
        if params.keys() & along.keys() or _ADMIT_COLUMNS & queries.keys():
            raise ValueError("the queries' names and parameters must not be the admission's")
        sql = _with_columns(sql, queries)
        params.update(along)
    row = db.hot_row(sql, params)  # every request: the hot path
    if row is None:
        raise RuntimeError("the admission statement returned no row")
    ratelimit.check(ratelimit.Usage(hits=row["hits"], limit=limit, reset_after=row["reset_after"]), route)
    if row["deleted"]:
        logger.info("authentication rejected", extra={"reason": "account deleted"})
        raise AccountDeleted("this account has been deleted")
    return row


def _with_columns(sql: str, queries: dict[str, str]) -> str:
    key = (sql, tuple(queries.items()))
    made = _along_sql.get(key)
    if made is None:
        columns = "".join(f",\n       ({query}) AS {name}" for name, query in queries.items())
        made = sql.replace("\n  FROM hit\n", f"{columns}\n  FROM hit\n")
        if made == sql:  # the admission's text changed: its last select list is where they go
            raise RuntimeError("the admission statement has no '  FROM hit' line for extra columns")
        if len(_along_sql) < 64:  # the routes' few constant sets
            _along_sql[key] = made
    return made


def mint_token(
    user_id: uuid.UUID | str,
    *,
    ttl_s: int = 3600,
    secret: str | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    claims: Mapping[str, Any] | None = None,
) -> str:
    """An HS256 token for ``user_id`` (local runs and tests). The key defaults to the first
    ``JWT_SECRET`` value, issuer and audience to ``JWT_ISSUER``/``JWT_AUDIENCE``."""
    import jwt

    s = config.settings()
    key = secret or _secret_keys()[0]
    now = int(time.time())
    payload: dict[str, Any] = {**(claims or {}), "sub": str(uuid.UUID(str(user_id))),
                               "iat": now, "nbf": now, "exp": now + ttl_s}
    if issuer := issuer or s.JWT_ISSUER:
        payload["iss"] = issuer
    if audience := audience or s.JWT_AUDIENCE:
        payload["aud"] = audience
    return jwt.encode(payload, key, algorithm="HS256")
