-- RevenueCat: who an app user id is, what a couple may use, and the bookkeeping that
-- keeps store events order-safe (transfers, refunds) and replayable (unmatched events).
-- The active-entitlement view and has_entitlement() are what other functions ask.
-- depends: 0003_ledger_inbox 0004_catalog

-- Entitlement rows remember a little more of the event that set them.
ALTER TABLE entitlements
    ADD COLUMN period_type     text,                    -- NORMAL, TRIAL, INTRO, PREPAID, PROMOTIONAL
    ADD COLUMN last_event_type text;

-- "Does this user, or their pair, have entitlement X now?" Every entitlement a user may
-- use: their own (owner 'self') and their pair partner's (owner 'pair'). Active means
-- not revoked (active) and not expired (expires_at NULL = no expiry).
CREATE VIEW active_entitlements AS
SELECT e.user_id, e.entitlement_id, e.source, e.expires_at, 'self'::text AS owner, e.user_id AS holder_id
FROM entitlements e
WHERE e.active AND (e.expires_at IS NULL OR e.expires_at > now())
UNION ALL
SELECT me.user_id, e.entitlement_id, e.source, e.expires_at, 'pair'::text AS owner, e.user_id AS holder_id
FROM pair_members me
JOIN pair_members partner ON partner.pair_id = me.pair_id AND partner.user_id <> me.user_id
JOIN entitlements e ON e.user_id = partner.user_id
WHERE e.active AND (e.expires_at IS NULL OR e.expires_at > now());

CREATE FUNCTION has_entitlement(p_user_id uuid, p_entitlement_id text) RETURNS boolean
    LANGUAGE sql STABLE
AS $$
    SELECT EXISTS (SELECT 1 FROM active_entitlements
                   WHERE user_id = p_user_id AND entitlement_id = p_entitlement_id)
$$;

-- RevenueCat app user ids (anonymous $RCAnonymousID:..., or custom ids) learned to belong
-- to one of our users from an event that named both. Our own user ids (UUIDs) are not
-- stored here: they resolve through users directly.
CREATE TABLE revenuecat_aliases (
    app_user_id text PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revenuecat_aliases_user_idx ON revenuecat_aliases (user_id);

-- Unmatched events, by every app user id that could match them later: the next event
-- for a user (or scripts/replay-unmatched) replays the ones waiting on that user's ids.
CREATE TABLE revenuecat_pending (
    app_user_id text NOT NULL,
    inbox_id    bigint NOT NULL REFERENCES webhook_inbox (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_user_id, inbox_id)
);
CREATE INDEX revenuecat_pending_inbox_idx ON revenuecat_pending (inbox_id);

-- TRANSFER events: a subscription moved from one user to another at transferred_at.
-- An older event for from_user that arrives later applies to to_user instead.
CREATE TABLE revenuecat_transfers (
    event_id        text NOT NULL,
    from_user       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    to_user         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    transferred_at  timestamptz NOT NULL,
    PRIMARY KEY (event_id, from_user),
    CHECK (from_user <> to_user)
);
CREATE INDEX revenuecat_transfers_from_idx ON revenuecat_transfers (from_user, transferred_at);

-- Refunds (CANCELLATION with cancel_reason CUSTOMER_SUPPORT) and their reversals per
-- store transaction, so a purchase whose refund arrived first never grants credits, and
-- a reversal gives back what the refund took, whatever order the three arrive in.
CREATE TABLE revenuecat_refunds (
    transaction_id  text PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refunded_at     timestamptz,                        -- the refund event's time
    reversed_at     timestamptz,                        -- the REFUND_REVERSED event's time
    CHECK (refunded_at IS NOT NULL OR reversed_at IS NOT NULL)
);

-- RevenueCat virtual currencies whose VIRTUAL_CURRENCY_TRANSACTION adjustments move our
-- credit balance (credits per unit). Empty by default: map a code only when RevenueCat,
-- not the product catalog, is meant to hand out the credits, or they are granted twice.
CREATE TABLE revenuecat_currencies (
    code              text PRIMARY KEY,
    credits_per_unit  integer NOT NULL CHECK (credits_per_unit > 0),
    created_at        timestamptz NOT NULL DEFAULT now()
);
