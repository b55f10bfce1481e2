"""What a RevenueCat event does to entitlements and credits: the state machine.

``apply_event(conn, event)`` runs inside the delivery's transaction (the inbox row and
every effect commit together) and returns the inbox status: processed, ignored or
unmatched. It never sees HTTP.

Order safety (events arrive in any order, each at least once):

- Entitlements: one upsert per (user, entitlement), guarded by the event's order key
  ``(event time, event id)``: an event older than the one that last wrote the row
  changes nothing. ``expires_at`` only grows, except through EXPIRATION, a refund
  (access ends at the refund's time) or a transfer. Ending events write a row even when
  none existed, so an older purchase that arrives after them stays without effect.
- Transfers: recorded; an event for the old owner that is older than the transfer is
  applied to the new owner instead, so transfer-then-purchase equals purchase-then-transfer.
- Purchases: a purchase or renewal is applied once per store transaction, whatever the
  event id: the first event to apply it claims the transaction (``revenuecat_claims``);
  another event for it (a webhook after reconcile healed it from ``GET /v1/subscribers``,
  or the other way round) is a ``duplicate`` with no effect. Credits are also granted
  once per transaction by the ledger (ref ``purchase:<transaction_id>``); refunds and
  their reversals are remembered per transaction, so purchase, refund and reversal end
  in the same balance in any order.
- Every effect on a user runs with that user's row locked (``FOR NO KEY UPDATE``), so two
  events of one user never interleave their reads and writes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from common import db, ledger
from common.observability import logger
from common.providers.revenuecat_events import GRANTING, KNOWN, NO_ACCESS_CHANGE, Event, ms
from common.webhooks import Outcome

if TYPE_CHECKING:
    import psycopg

PROVIDER = "revenuecat"
SOURCE = "revenuecat"  # ledger source and entitlements.source
#: How many transfers an old event may follow to its subscription's current owner.
MAX_TRANSFER_HOPS = 10
#: Event types that grant the product's credits once per store transaction.
CREDIT_GRANTING = frozenset({"INITIAL_PURCHASE", "RENEWAL", "NON_RENEWING_PURCHASE"})

# --- Queries ---------------------------------------------------------------------------

#: The first id (in resolution order) that names one of our users: a UUID with a users
#: row, or an alias learned earlier.
RESOLVE = """
SELECT coalesce(u.id, a.user_id) AS user_id
FROM unnest(%(ids)s::text[], %(uuids)s::uuid[]) WITH ORDINALITY AS c(app_user_id, as_uuid, ord)
LEFT JOIN users u ON u.id = c.as_uuid
LEFT JOIN revenuecat_aliases a ON a.app_user_id = c.app_user_id
WHERE coalesce(u.id, a.user_id) IS NOT NULL
ORDER BY c.ord
"""

#: NO KEY UPDATE: serialises this user's events (and the ledger's balance updates) without
#: blocking other functions that only insert rows referencing the user (FK key-share locks).
LOCK_USERS = "SELECT id FROM users WHERE id = ANY(%(ids)s) ORDER BY id FOR NO KEY UPDATE"

LEARN_ALIASES = """
INSERT INTO revenuecat_aliases (app_user_id, user_id)
SELECT unnest(%(ids)s::text[]), %(user_id)s
ON CONFLICT (app_user_id) DO NOTHING
"""

#: Park an unmatched event under every id that could match it later.
PARK = """
INSERT INTO revenuecat_pending (app_user_id, inbox_id)
SELECT unnest(%(ids)s::text[]), w.id
FROM webhook_inbox w WHERE w.provider = %(provider)s AND w.event_id = %(event_id)s
ON CONFLICT DO NOTHING
"""

UNPARK = """
DELETE FROM revenuecat_pending
WHERE inbox_id = (SELECT id FROM webhook_inbox WHERE provider = %(provider)s AND event_id = %(event_id)s)
"""

#: The catalog entry of a store product (migration 0004; editable without a deploy).
PRODUCT = """
SELECT p.id, p.kind, p.credits, p.entitlement_ids
FROM product_prices pp JOIN products p ON p.id = pp.product_id
WHERE pp.provider = 'revenuecat' AND pp.provider_product_id = ANY(%(ids)s)
ORDER BY array_position(%(ids)s::text[], pp.provider_product_id)
LIMIT 1
"""

#: The transfer (after ``after``) that moved this user's older subscriptions elsewhere.
NEXT_TRANSFER = """
SELECT to_user, transferred_at FROM revenuecat_transfers
WHERE from_user = %(user_id)s AND transferred_at > %(after)s
ORDER BY transferred_at, event_id
LIMIT 1
"""

#: One entitlement, guarded by the order key. Modes: 'grant' (active until the event's
#: expiry; a lifetime NULL wins), 'keep' (cancellation, billing issue: activity as it
#: was, expiry may only grow), 'end' (expiration, refund: inactive from the event's
#: expiry). An ending event for another product than the row's, whose expiry is before
#: the row's, ends nothing (an old plan expiring after an upgrade).
UPSERT_ENTITLEMENT = """
INSERT INTO entitlements AS e (user_id, entitlement_id, source, expires_at, active, will_renew, store,
                               environment, product_id, period_type, last_event_at, last_event_id,
                               last_event_type)
VALUES (%(user_id)s, %(entitlement_id)s, 'revenuecat', %(expires_at)s, %(mode)s::text <> 'end',
        coalesce(%(will_renew)s::boolean, false), %(store)s, %(environment)s, %(product_id)s,
        %(period_type)s, %(at)s, %(event_id)s, %(event_type)s)
ON CONFLICT (user_id, entitlement_id, source) DO UPDATE SET
    active = CASE %(mode)s::text WHEN 'grant' THEN true WHEN 'end' THEN false ELSE e.active END,
    expires_at = CASE
        WHEN %(mode)s::text = 'end' THEN EXCLUDED.expires_at
        WHEN NOT e.active THEN CASE WHEN %(mode)s::text = 'grant' THEN EXCLUDED.expires_at
                                    ELSE e.expires_at END
        WHEN e.expires_at IS NULL THEN NULL
        WHEN EXCLUDED.expires_at IS NULL THEN CASE WHEN %(mode)s::text = 'grant' THEN NULL
                                                   ELSE e.expires_at END
        ELSE greatest(e.expires_at, EXCLUDED.expires_at) END,
    will_renew = CASE WHEN %(mode)s::text = 'end' THEN false
                      ELSE coalesce(%(will_renew)s::boolean, e.will_renew) END,
    store = coalesce(EXCLUDED.store, e.store),
    environment = coalesce(EXCLUDED.environment, e.environment),
    product_id = coalesce(EXCLUDED.product_id, e.product_id),
    period_type = coalesce(EXCLUDED.period_type, e.period_type),
    last_event_at = EXCLUDED.last_event_at,
    last_event_id = EXCLUDED.last_event_id,
    last_event_type = EXCLUDED.last_event_type,
    updated_at = now()
WHERE (e.last_event_at, coalesce(e.last_event_id, '')) < (EXCLUDED.last_event_at, EXCLUDED.last_event_id)
  AND NOT (%(mode)s::text = 'end' AND e.product_id IS DISTINCT FROM EXCLUDED.product_id
           AND (e.expires_at IS NULL OR e.expires_at > EXCLUDED.expires_at))
RETURNING e.entitlement_id
"""

RECORD_TRANSFER = """
INSERT INTO revenuecat_transfers (event_id, from_user, to_user, transferred_at)
VALUES (%(event_id)s, %(from_user)s, %(to_user)s, %(at)s)
ON CONFLICT DO NOTHING
"""

#: Everything the old owner held from before the transfer moves; where the new owner
#: already has the entitlement, the row written by the newer event wins.
MOVE_ENTITLEMENTS = """
WITH moved AS (
    DELETE FROM entitlements
    WHERE user_id = %(from_user)s AND source = 'revenuecat' AND last_event_at < %(at)s
    RETURNING *
)
INSERT INTO entitlements AS e (user_id, entitlement_id, source, expires_at, active, will_renew, store,
                               environment, product_id, period_type, last_event_at, last_event_id,
                               last_event_type)
SELECT %(to_user)s, entitlement_id, source, expires_at, active, will_renew, store, environment,
       product_id, period_type, last_event_at, last_event_id, last_event_type
FROM moved
ON CONFLICT (user_id, entitlement_id, source) DO UPDATE SET
    expires_at = EXCLUDED.expires_at, active = EXCLUDED.active, will_renew = EXCLUDED.will_renew,
    store = EXCLUDED.store, environment = EXCLUDED.environment, product_id = EXCLUDED.product_id,
    period_type = EXCLUDED.period_type, last_event_at = EXCLUDED.last_event_at,
    last_event_id = EXCLUDED.last_event_id, last_event_type = EXCLUDED.last_event_type,
    updated_at = now()
WHERE (e.last_event_at, coalesce(e.last_event_id, ''))
    < (EXCLUDED.last_event_at, coalesce(EXCLUDED.last_event_id, ''))
"""

LEDGER_ENTRY = """
SELECT user_id, amount FROM credit_ledger WHERE source = 'revenuecat' AND ref = %(ref)s
"""

#: A refund or its reversal for one store transaction; the later event time of each kind
#: is kept. A transaction counts as refunded while its refund is newer than any reversal.
NOTE_REFUND = """
INSERT INTO revenuecat_refunds AS r (transaction_id, user_id, refunded_at, reversed_at)
VALUES (%(transaction_id)s, %(user_id)s, %(refunded_at)s, %(reversed_at)s)
ON CONFLICT (transaction_id) DO UPDATE SET
    refunded_at = greatest(r.refunded_at, EXCLUDED.refunded_at),
    reversed_at = greatest(r.reversed_at, EXCLUDED.reversed_at)
RETURNING refunded_at IS NOT NULL AND (reversed_at IS NULL OR reversed_at < refunded_at) AS refunded
"""

REFUND_STATE = """
SELECT refunded_at IS NOT NULL AND (reversed_at IS NULL OR reversed_at < refunded_at) AS refunded
FROM revenuecat_refunds WHERE transaction_id = %(transaction_id)s
"""

#: The first event to apply a store transaction's purchase claims it; the claim's event id.
CLAIM = """
INSERT INTO revenuecat_claims AS c (transaction_id, event_id) VALUES (%(transaction_id)s, %(event_id)s)
ON CONFLICT (transaction_id) DO UPDATE SET event_id = c.event_id
RETURNING event_id
"""

CURRENCIES = "SELECT code, credits_per_unit FROM revenuecat_currencies WHERE code = ANY(%(codes)s)"


# --- API -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    id: str
    kind: str
    credits: int
    entitlement_ids: list[str]


def apply_event(conn: psycopg.Connection[Any], event: Event, *, apply_sandbox: bool) -> Outcome:
    """Apply one event inside the caller's transaction; the returned status is for the
    inbox. Unmatched events are parked under their app user ids for a later replay."""
    outcome = _apply(conn, event, apply_sandbox=apply_sandbox)
    db.execute_on(conn, PARK if outcome.status == "unmatched" else UNPARK,
         {"provider": PROVIDER, "event_id": event.id, "ids": _park_ids(event)})
    return outcome


def _apply(conn: psycopg.Connection[Any], event: Event, *, apply_sandbox: bool) -> Outcome:
    if event.type == "TEST":
        return Outcome.ignored("test event")
    if event.type not in KNOWN:
        return Outcome.ignored("unknown event type")
    if event.env == "SANDBOX" and not apply_sandbox:
        return Outcome.ignored("sandbox event (not applied in this stage)")
    if event.type == "TRANSFER":
        return _transfer(conn, event)
    user_id = resolve(conn, event.app_user_ids())
    if user_id is None:
        if event.type in NO_ACCESS_CHANGE:
            return Outcome.ignored("no matching user; nothing to apply")
        return Outcome.unmatched("no matching user")
    db.execute_on(conn, LOCK_USERS, {"ids": [user_id]})
    learn_aliases(conn, user_id, event.app_user_ids())
    if event.type in NO_ACCESS_CHANGE:
        return Outcome("processed", user_id=user_id)
    if event.type == "VIRTUAL_CURRENCY_TRANSACTION":
        return _virtual_currency(conn, user_id, event)
    if event.type in CREDIT_GRANTING and event.transaction_id:
        params = {"transaction_id": event.transaction_id, "event_id": event.id}
        claim = db.one_row(db.execute_on(conn, CLAIM, params))
        if claim["event_id"] != event.id:
            return Outcome("duplicate", "ignored", "store transaction already applied", user_id=user_id)
    product = product_for(conn, event.product_id)
    _entitlements(conn, user_id, event, product)
    _credits(conn, user_id, event, product)
    return Outcome("processed", user_id=user_id)


def resolve(conn: psycopg.Connection[Any], app_user_ids: list[str]) -> uuid.UUID | None:
    """Our user named by the first of ``app_user_ids`` that names one, or None."""
    users = resolve_all(conn, app_user_ids)
    return users[0] if users else None


def resolve_all(conn: psycopg.Connection[Any], app_user_ids: list[str]) -> list[uuid.UUID]:
    """Our users named by ``app_user_ids``, in their order, without repeats."""
    if not app_user_ids:
        return []
    uuids = [_as_uuid(i) for i in app_user_ids]
    rows = db.execute_on(conn, RESOLVE, {"ids": app_user_ids, "uuids": uuids}).fetchall()
    return list(dict.fromkeys(row["user_id"] for row in rows))


def learn_aliases(conn: psycopg.Connection[Any], user_id: uuid.UUID, app_user_ids: list[str]) -> None:
    """Remember the event's other ids (anonymous, custom) as this user's. UUIDs are left
    out: they are our user ids, resolved through users, never someone's alias."""
    ids = [i for i in app_user_ids if _as_uuid(i) is None]
    if ids:
        db.execute_on(conn, LEARN_ALIASES, {"ids": ids, "user_id": user_id})


def product_for(conn: psycopg.Connection[Any], store_product_id: str | None) -> Product | None:
    """The catalog product of a store product id. Google Play subscriptions arrive as
    ``<subscription>:<base plan>``; the subscription id alone matches too."""
    if not store_product_id:
        return None
    ids = [store_product_id]
    if ":" in store_product_id:
        ids.append(store_product_id.split(":", 1)[0])
    row = db.execute_on(conn, PRODUCT, {"ids": ids}).fetchone()
    return Product(**row) if row else None


# --- entitlements ----------------------------------------------------------------------


def _entitlement_ids(event: Event, product: Product | None) -> list[str]:
    """The catalog's entitlements for a known product; RevenueCat's own mapping (the
    event's entitlement ids) for a product the catalog does not know."""
    if product is not None:
        return list(product.entitlement_ids)
    ids = event.entitlement_ids or ([event.entitlement_id] if event.entitlement_id else [])
    return list(dict.fromkeys(ids))


def _mode(event: Event) -> tuple[str, datetime | None, bool | None]:
    """(mode, expires_at, will_renew) of an access-changing event; will_renew None keeps it."""
    if event.type == "EXPIRATION":
        return "end", event.expires_at or event.at, False
    if event.is_refund:
        return "end", event.at, False  # access ends at the refund
    if event.type == "CANCELLATION":
        return "keep", event.expires_at, False
    if event.type == "BILLING_ISSUE":
        return "keep", ms(event.grace_period_expiration_at_ms) or event.expires_at, None
    if event.type in ("INITIAL_PURCHASE", "RENEWAL", "UNCANCELLATION"):
        return "grant", event.expires_at, event.expires_at is not None
    if event.type == "NON_RENEWING_PURCHASE":
        return "grant", event.expires_at, False
    return "grant", event.expires_at, None  # extended, refund reversed, temporary grant


def _entitlements(conn: psycopg.Connection[Any], user_id: uuid.UUID, event: Event,
                  product: Product | None) -> None:
    entitlement_ids = _entitlement_ids(event, product)
    if not entitlement_ids or not (event.type in GRANTING or event.type in (
            "CANCELLATION", "EXPIRATION", "BILLING_ISSUE")):
        return
    owner = current_owner(conn, user_id, event.at)
    mode, expires_at, will_renew = _mode(event)
    for entitlement_id in entitlement_ids:
        written = db.execute_on(conn, UPSERT_ENTITLEMENT, {
            "user_id": owner, "entitlement_id": entitlement_id, "mode": mode, "expires_at": expires_at,
            "will_renew": will_renew, "store": event.store, "environment": event.env,
            "product_id": event.product_id, "period_type": event.period_type, "at": event.at,
            "event_id": event.id, "event_type": event.type,
        }).fetchone()
        if written is None:
            logger.info("older event: entitlement left as it is",
                        extra={"event_id": event.id, "entitlement_id": entitlement_id})


def current_owner(conn: psycopg.Connection[Any], user_id: uuid.UUID, at: datetime) -> uuid.UUID:
    """Who holds now what ``user_id`` held at ``at``: follows the transfers made after it."""
    owner, after = user_id, at
    for _ in range(MAX_TRANSFER_HOPS):
        row = db.execute_on(conn, NEXT_TRANSFER, {"user_id": owner, "after": after}).fetchone()
        if row is None:
            break
        owner, after = row["to_user"], row["transferred_at"]
    return owner


def _transfer(conn: psycopg.Connection[Any], event: Event) -> Outcome:
    to_ids = list(dict.fromkeys(event.transferred_to or []))
    to_user = resolve(conn, to_ids)
    if to_user is None:
        return Outcome.unmatched("transfer to no matching user")
    from_users = [u for u in resolve_all(conn, list(dict.fromkeys(event.transferred_from or [])))
                  if u != to_user]
    db.execute_on(conn, LOCK_USERS, {"ids": sorted([to_user, *from_users])})
    learn_aliases(conn, to_user, to_ids)
    for from_user in from_users:
        params = {"event_id": event.id, "from_user": from_user, "to_user": to_user, "at": event.at}
        db.execute_on(conn, RECORD_TRANSFER, params)
        db.execute_on(conn, MOVE_ENTITLEMENTS, params)
    return Outcome("processed", note=None if from_users else "transfer from no known user", user_id=to_user)


# --- credits ---------------------------------------------------------------------------


def _transaction_ref(event: Event) -> str:
    return event.transaction_id or f"event:{event.id}"


def _credits(conn: psycopg.Connection[Any], user_id: uuid.UUID, event: Event,
             product: Product | None) -> None:
    tid = _transaction_ref(event)
    if event.type in CREDIT_GRANTING and product is not None and product.credits > 0:
        state = db.execute_on(conn, REFUND_STATE, {"transaction_id": tid}).fetchone()
        if state and state["refunded"]:
            logger.info("purchase already refunded: no credits", extra={"event_id": event.id})
            return
        ledger.grant(user_id, product.credits, reason=f"revenuecat {event.type.lower()} {product.id}",
                     source=SOURCE, ref=f"purchase:{tid}", conn=conn)
    elif event.is_refund:
        _refund(conn, user_id, event, tid)
    elif event.type == "REFUND_REVERSED":
        _refund_reversed(conn, user_id, event, tid, product)


def _refund(conn: psycopg.Connection[Any], user_id: uuid.UUID, event: Event, tid: str) -> None:
    """Claw back what the refunded transaction granted, as far as the balance allows."""
    params = {"transaction_id": tid, "user_id": user_id, "refunded_at": event.at, "reversed_at": None}
    state = db.one_row(db.execute_on(conn, NOTE_REFUND, params))
    if not state["refunded"]:
        return  # a newer reversal already stands
    grant = db.execute_on(conn, LEDGER_ENTRY, {"ref": f"purchase:{tid}"}).fetchone()
    if grant is None:
        return  # the purchase has not arrived: it will find the refund and grant nothing
    taken, shortfall = ledger.clawback(grant["user_id"], grant["amount"], reason="revenuecat refund",
                                       source=SOURCE, ref=f"refund:{tid}", conn=conn)
    if shortfall:
        logger.warning("refund clawback short of the balance",
                       extra={"event_id": event.id, "taken": taken, "shortfall": shortfall})


def _refund_reversed(conn: psycopg.Connection[Any], user_id: uuid.UUID, event: Event, tid: str,
                     product: Product | None) -> None:
    """Give back what the refund took; or, if neither refund nor purchase took effect,
    grant the purchase's credits (the purchase event then finds them granted)."""
    params = {"transaction_id": tid, "user_id": user_id, "refunded_at": None, "reversed_at": event.at}
    state = db.one_row(db.execute_on(conn, NOTE_REFUND, params))
    if state["refunded"]:
        return  # a newer refund stands
    clawback = db.execute_on(conn, LEDGER_ENTRY, {"ref": f"refund:{tid}"}).fetchone()
    if clawback is not None:
        if clawback["amount"] < 0:
            ledger.grant(clawback["user_id"], -clawback["amount"], reason="revenuecat refund reversed",
                         source=SOURCE, ref=f"refund-reversed:{tid}", conn=conn)
    elif product is not None and product.credits > 0:
        ledger.grant(user_id, product.credits, reason=f"revenuecat refund reversed {product.id}",
                     source=SOURCE, ref=f"purchase:{tid}", conn=conn)


def _virtual_currency(conn: psycopg.Connection[Any], user_id: uuid.UUID, event: Event) -> Outcome:
    """Adjustments in a mapped currency move the credit balance: grants, or spends taken
    as far as the balance allows (a clawback entry records any shortfall)."""
    adjustments = event.adjustments or []
    codes = list({a.currency.code for a in adjustments})
    found = db.execute_on(conn, CURRENCIES, {"codes": codes}).fetchall()
    rates = {r["code"]: r["credits_per_unit"] for r in found}
    applied = 0
    txn = event.virtual_currency_transaction_id or event.id
    for index, adjustment in enumerate(adjustments):
        credits = adjustment.amount * rates.get(adjustment.currency.code, 0)
        ref = f"vc:{txn}:{index}"
        if credits > 0:
            ledger.grant(user_id, credits, reason=f"revenuecat {adjustment.currency.code} granted",
                         source=SOURCE, ref=ref, conn=conn)
        elif credits < 0:
            ledger.clawback(user_id, -credits, reason=f"revenuecat {adjustment.currency.code} spent",
                            source=SOURCE, ref=ref, conn=conn)
        applied += credits != 0
    if not applied:
        return Outcome.ignored("no adjustment in a mapped currency", user_id=user_id)
    return Outcome("processed", user_id=user_id)


# --- helpers ---------------------------------------------------------------------------


def _park_ids(event: Event) -> list[str]:
    ids = (event.transferred_to or []) if event.type == "TRANSFER" else event.app_user_ids()
    return [_canonical(i) for i in dict.fromkeys(ids)]


def _as_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        return None


def _canonical(app_user_id: str) -> str:
    """UUIDs in their canonical (lower-case) text, other ids as sent."""
    return _as_uuid(app_user_id) or app_user_id
