DROP INDEX IF EXISTS webhook_inbox_finished_received_idx;
