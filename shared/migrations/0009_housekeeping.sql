-- Housekeeping (cache-cleanup): the index its webhook-inbox retention purge walks.
-- The purge deletes only finished deliveries ('processed', 'ignored') received before the
-- retention cut-off, oldest first, in bounded batches. A partial index on exactly those
-- rows lets each batch read its LIMIT rows from the front of the index, instead of
-- stepping over the unfinished ones (received, unmatched, failed), which are kept until
-- someone deals with them. The other purges walk indexes that 0001 already has:
-- cache_entries (expires_at), idempotency_records (expires_at), rate_limit_windows
-- (window_start), credit_reservations (created_at) WHERE status = 'reserved'.
-- Retention periods are settings of the job (docs/housekeeping.md), not data.
-- depends: 0001_initial

CREATE INDEX webhook_inbox_finished_received_idx ON webhook_inbox (received_at)
    WHERE status IN ('processed', 'ignored');
