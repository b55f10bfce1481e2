-- Web payments (checkout, paymob-webhook, stripe-webhook): what an order needs beyond
-- 0001 to be paid once, refunded proportionally and, for plans, to follow a Stripe
-- subscription without ever moving backwards; payment kinds and statuses.
-- See docs/payments.md for the state machines these columns and constraints encode.
-- depends: 0004_catalog

ALTER TABLE orders
    ADD COLUMN provider_checkout_id text,                    -- Paymob intention id (pi_...); Stripe session id
    ADD COLUMN failure_code         text,                    -- why it failed: provider_error, declined, expired
    ADD COLUMN refunded_minor       bigint NOT NULL DEFAULT 0,
    ADD COLUMN period_end           timestamptz,             -- plans: access until (Paymob: paid_at + period; Stripe: the subscription's)
    ADD COLUMN subscription_id      text,                    -- Stripe subscription (plans)
    ADD COLUMN subscription_status  text,                    -- Stripe's status, as last applied
    ADD COLUMN cancel_at_period_end boolean NOT NULL DEFAULT false,
    ADD COLUMN state_at             timestamptz,             -- provider time of the subscription state applied
    ADD COLUMN state_event_id       text,                    -- the event that set it
    ADD CONSTRAINT orders_refunded_range CHECK (refunded_minor BETWEEN 0 AND amount_minor),
    ADD CONSTRAINT orders_refund_needs_payment CHECK (refunded_minor = 0 OR status IN ('paid', 'refunded')),
    ADD CONSTRAINT orders_refunded_in_full CHECK (status <> 'refunded' OR refunded_minor = amount_minor),
    ADD CONSTRAINT orders_paid_at CHECK ((status IN ('paid', 'refunded')) = (paid_at IS NOT NULL)),
    ADD CONSTRAINT orders_failure_code CHECK ((status = 'failed') = (failure_code IS NOT NULL)),
    ADD CONSTRAINT orders_subscription_status CHECK (subscription_status IN (
        'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'paused')),
    ADD CONSTRAINT orders_subscription_state CHECK (subscription_status IS NULL OR state_at IS NOT NULL);

CREATE UNIQUE INDEX orders_subscription_idx ON orders (provider, subscription_id)
    WHERE subscription_id IS NOT NULL;

-- An order moves forward only: created -> pending -> paid -> refunded, and failed until a
-- later attempt pays it (Paymob lets the buyer retry on the same order). Paid is never
-- undone except by a refund, so "paid once" holds whatever the code does.
CREATE FUNCTION orders_status_transition() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.status = OLD.status THEN
        RETURN NEW;
    END IF;
    IF (OLD.status, NEW.status) IN (
        ('created', 'pending'), ('created', 'paid'), ('created', 'failed'),
        ('pending', 'paid'), ('pending', 'failed'),
        ('failed', 'pending'), ('failed', 'paid'),
        ('paid', 'refunded')) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'order % cannot go from % to %', OLD.id, OLD.status, NEW.status
        USING ERRCODE = 'check_violation';
END
$$;

CREATE TRIGGER orders_status_transition
    BEFORE UPDATE OF status ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_status_transition();

-- Payments: one row per provider transaction (Paymob transaction id, Stripe checkout
-- session or invoice id), its latest state and the full callback for audit.
ALTER TABLE payments
    ADD COLUMN kind                  text NOT NULL DEFAULT 'payment' CHECK (kind IN ('payment', 'refund')),
    ADD COLUMN payment_intent_id     text,                   -- Stripe: how a charge.refunded finds its payment
    ADD COLUMN parent_transaction_id text,                   -- Paymob refund/void: the transaction it refunds
    ADD COLUMN note                  text,                   -- why it had no effect (amount_mismatch, ...)
    ADD COLUMN updated_at            timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT payments_status CHECK (status IN (
        'pending', 'paid', 'declined', 'refunded', 'voided', 'mismatch', 'unmatched', 'duplicate', 'ignored')),
    ADD CONSTRAINT payments_unmatched CHECK ((status = 'unmatched') = (order_id IS NULL));

CREATE INDEX payments_intent_idx ON payments (provider, payment_intent_id) WHERE payment_intent_id IS NOT NULL;
