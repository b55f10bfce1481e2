"""Demo data for local runs, inserted idempotently: a demo user holding credits (granted
through the ledger, so sum(ledger) = balance), a partner user and the pair linking them;
plus a token for the demo user. The tools and products catalogs come from migrations.

Fixed ids, so a token printed by one `make dev` keeps working in the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

DEMO_USER_ID = UUID("00000000-0000-4000-8000-00000000de60")  # scripts/token's default user
PARTNER_USER_ID = UUID("00000000-0000-4000-8000-00000000de61")
DEMO_PAIR_ID = UUID("00000000-0000-4000-8000-00000000de70")
DEMO_CREDITS = 100

# Named queries. Every statement is a no-op the second time: users and pairs by their
# fixed ids, the grant by the ledger's unique (source, ref), the balance only moved by a
# grant row inserted in the same statement.
INSERT_USERS = """
INSERT INTO users (id, email) VALUES (%(demo)s, 'demo@example.com'), (%(partner)s, 'partner@example.com')
ON CONFLICT DO NOTHING
"""
GRANT_DEMO_CREDITS = """
WITH granted AS (
    INSERT INTO credit_ledger (user_id, amount, kind, reason, source, ref)
    VALUES (%(demo)s, %(credits)s, 'grant', 'demo credits for local runs', 'seed', 'demo-credits')
    ON CONFLICT (source, ref) DO NOTHING
    RETURNING user_id, amount
)
UPDATE users SET credits = users.credits + granted.amount, updated_at = now()
FROM granted WHERE users.id = granted.user_id
"""
INSERT_PAIR = "INSERT INTO pairs (id) VALUES (%(pair)s) ON CONFLICT DO NOTHING"
INSERT_PAIR_MEMBERS = """
INSERT INTO pair_members (pair_id, user_id) VALUES (%(pair)s, %(demo)s), (%(pair)s, %(partner)s)
ON CONFLICT DO NOTHING
"""
DEMO_BALANCE = "SELECT credits FROM users WHERE id = %(demo)s"


@dataclass(frozen=True)
class Seeded:
    demo_user_id: UUID
    partner_user_id: UUID
    pair_id: UUID
    demo_credits: int  # the demo user's balance now


def seed(database_url: str) -> Seeded:
    """Insert the demo data (one transaction); running it again changes nothing."""
    import psycopg

    params = {"demo": DEMO_USER_ID, "partner": PARTNER_USER_ID, "pair": DEMO_PAIR_ID, "credits": DEMO_CREDITS}
    with psycopg.connect(database_url) as conn:
        for query in (INSERT_USERS, GRANT_DEMO_CREDITS, INSERT_PAIR, INSERT_PAIR_MEMBERS):
            conn.execute(query, params)
        row = conn.execute(DEMO_BALANCE, params).fetchone()
    return Seeded(DEMO_USER_ID, PARTNER_USER_ID, DEMO_PAIR_ID, int(row[0]) if row else 0)


def token(user_id: UUID | str, secret: str, *, issuer: str | None = None, audience: str | None = None,
          ttl: timedelta = timedelta(days=7)) -> str:
    """An HS256 bearer token for ``user_id`` (its ``sub``), minted by the layer's auth
    module as the functions verify it; the first value of a rotated (comma-separated) secret."""
    from common.auth import mint_token

    key = next(part.strip() for part in secret.split(",") if part.strip())
    return mint_token(user_id, ttl_s=int(ttl.total_seconds()), secret=key, issuer=issuer, audience=audience)
