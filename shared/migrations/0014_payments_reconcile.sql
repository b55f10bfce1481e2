-- Payments that arrival order and field-shifting cannot fool, and the reconcile function
-- that heals dropped webhooks (docs/payments.md, docs/revenuecat.md: Reconciliation).
--
-- - webhook_inbox gains 'rejected': a correctly signed callback that fails a binding
--   (a Paymob integration id or merchant that is not ours). It took no effect; a
--   redelivery is checked again (it is not a finished status).
-- - orders.cancel_flag_at: the Stripe event time of the cancel_at_period_end value kept,
--   so the flag is the latest one known whatever order the events arrive in.
-- - orders.reconciled_at: when reconcile last asked Paymob about a pending order (the
--   least recently asked go first).
-- - reconcile_cursors: per provider, how far reconcile has read (Stripe: the created time
--   of the newest event applied); moved only after a run's reads succeeded.
-- - revenuecat_claims: one row per store transaction that granted (a purchase or a
--   renewal), naming the inbox event that applied it, so the same purchase seen by the
--   webhook and by reconcile (under different event ids) takes effect once.
-- depends: 0012_accounts 0013_ai_features

ALTER TABLE webhook_inbox DROP CONSTRAINT webhook_inbox_status_check;
ALTER TABLE webhook_inbox ADD CONSTRAINT webhook_inbox_status_check
    CHECK (status IN ('received', 'processed', 'ignored', 'unmatched', 'failed', 'parked', 'rejected'));

ALTER TABLE orders
    ADD COLUMN cancel_flag_at timestamptz,
    ADD COLUMN reconciled_at  timestamptz;
CREATE INDEX orders_open_paymob_idx ON orders (created_at) WHERE provider = 'paymob' AND status = 'pending';

CREATE TABLE reconcile_cursors (
    provider    text PRIMARY KEY,
    position    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE revenuecat_claims (
    transaction_id  text PRIMARY KEY,
    event_id        text NOT NULL,  -- no user: a claim names no one (account deletion keeps it)
    claimed_at      timestamptz NOT NULL DEFAULT now()
);
