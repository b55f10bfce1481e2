DROP TABLE IF EXISTS revenuecat_claims;
DROP TABLE IF EXISTS reconcile_cursors;
DROP INDEX IF EXISTS orders_open_paymob_idx;
ALTER TABLE orders DROP COLUMN IF EXISTS reconciled_at, DROP COLUMN IF EXISTS cancel_flag_at;
UPDATE webhook_inbox SET status = 'failed' WHERE status = 'rejected';
ALTER TABLE webhook_inbox DROP CONSTRAINT webhook_inbox_status_check;
ALTER TABLE webhook_inbox ADD CONSTRAINT webhook_inbox_status_check
    CHECK (status IN ('received', 'processed', 'ignored', 'unmatched', 'failed', 'parked'));
