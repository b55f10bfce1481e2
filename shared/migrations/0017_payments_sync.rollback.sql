DROP TABLE IF EXISTS revenuecat_sync_queue;
CREATE INDEX IF NOT EXISTS webhook_inbox_finished_received_idx ON webhook_inbox (received_at)
    WHERE status IN ('processed', 'ignored');
DROP INDEX IF EXISTS webhook_inbox_terminal_received_idx;
