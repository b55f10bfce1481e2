DROP INDEX IF EXISTS payments_intent_idx;
ALTER TABLE payments
    DROP CONSTRAINT IF EXISTS payments_unmatched,
    DROP CONSTRAINT IF EXISTS payments_status,
    DROP COLUMN IF EXISTS updated_at,
    DROP COLUMN IF EXISTS note,
    DROP COLUMN IF EXISTS parent_transaction_id,
    DROP COLUMN IF EXISTS payment_intent_id,
    DROP COLUMN IF EXISTS kind;
DROP TRIGGER IF EXISTS orders_status_transition ON orders;
DROP FUNCTION IF EXISTS orders_status_transition();
DROP INDEX IF EXISTS orders_subscription_idx;
ALTER TABLE orders
    DROP CONSTRAINT IF EXISTS orders_subscription_state,
    DROP CONSTRAINT IF EXISTS orders_subscription_status,
    DROP CONSTRAINT IF EXISTS orders_failure_code,
    DROP CONSTRAINT IF EXISTS orders_paid_at,
    DROP CONSTRAINT IF EXISTS orders_refunded_in_full,
    DROP CONSTRAINT IF EXISTS orders_refund_needs_payment,
    DROP CONSTRAINT IF EXISTS orders_refunded_range,
    DROP COLUMN IF EXISTS state_event_id,
    DROP COLUMN IF EXISTS state_at,
    DROP COLUMN IF EXISTS cancel_at_period_end,
    DROP COLUMN IF EXISTS subscription_status,
    DROP COLUMN IF EXISTS subscription_id,
    DROP COLUMN IF EXISTS period_end,
    DROP COLUMN IF EXISTS refunded_minor,
    DROP COLUMN IF EXISTS failure_code,
    DROP COLUMN IF EXISTS provider_checkout_id;
