-- Rejected webhook deliveries are purged like the other terminal ones (docs/housekeeping.md,
-- cache-cleanup): a 'rejected' row (a signed callback that failed a binding, migration
-- 0014) took no effect and is kept for audit, then goes after INBOX_RETENTION_DAYS like
-- 'processed' and 'ignored' rows. The purge walks this index (it replaces 0009's, which
-- did not cover 'rejected').
--
-- revenuecat_sync_queue: users whose app reported a purchase (checkout's POST
-- /revenuecat/sync) while RevenueCat could not be asked; reconcile asks about them first
-- and removes them once asked, so the purchase is not lost (docs/revenuecat.md).
-- depends: 0014_payments_reconcile

CREATE INDEX webhook_inbox_terminal_received_idx ON webhook_inbox (received_at)
    WHERE status IN ('processed', 'ignored', 'rejected');
DROP INDEX webhook_inbox_finished_received_idx;

CREATE TABLE revenuecat_sync_queue (
    user_id    uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    queued_at  timestamptz NOT NULL DEFAULT now()
);
