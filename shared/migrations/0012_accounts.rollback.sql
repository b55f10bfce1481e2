DROP FUNCTION IF EXISTS delete_account(uuid, timestamptz);
DROP TABLE IF EXISTS account_inbox_scrubs;
DROP TABLE IF EXISTS account_object_deletions;
DROP TABLE IF EXISTS account_deletions;
DROP TABLE IF EXISTS account_exports;
DROP FUNCTION IF EXISTS unlink_pair(uuid, uuid, text);
DROP TRIGGER IF EXISTS journal_entries_pair_audit ON journal_entries;
DROP FUNCTION IF EXISTS journal_entries_pair_audit();
DROP TABLE IF EXISTS pair_audit;
DROP TABLE IF EXISTS pair_invites;
DROP TRIGGER IF EXISTS pair_members_limit ON pair_members;
DROP FUNCTION IF EXISTS pair_members_limit();
ALTER TABLE pairs DROP COLUMN IF EXISTS dissolved_at;
DROP FUNCTION IF EXISTS cache_put(text, jsonb, double precision, integer, boolean, uuid);
CREATE FUNCTION cache_put(p_key text, p_value jsonb, p_ttl_s double precision,
                          p_compute_ms integer, p_async boolean) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    stored jsonb;
BEGIN
    IF p_async THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    INSERT INTO cache_entries (key, value, expires_at, compute_ms)
    VALUES (p_key, p_value, now() + make_interval(secs => p_ttl_s), p_compute_ms)
    ON CONFLICT (key) DO UPDATE
       SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at,
           compute_ms = EXCLUDED.compute_ms, created_at = now()
    RETURNING value INTO stored;
    RETURN stored;
END
$$;
DROP INDEX IF EXISTS cache_entries_owner_idx;
ALTER TABLE cache_entries DROP COLUMN IF EXISTS owner;
DROP INDEX IF EXISTS idempotency_records_owner_idx;
ALTER TABLE idempotency_records DROP COLUMN IF EXISTS owner;
UPDATE webhook_inbox SET status = 'failed' WHERE status = 'parked';
ALTER TABLE webhook_inbox DROP CONSTRAINT IF EXISTS webhook_inbox_status_check;
ALTER TABLE webhook_inbox ADD CONSTRAINT webhook_inbox_status_check
    CHECK (status IN ('received', 'processed', 'ignored', 'unmatched', 'failed'));
DROP TRIGGER IF EXISTS credit_reservations_account_deleted ON credit_reservations;
DROP TRIGGER IF EXISTS credit_ledger_account_deleted ON credit_ledger;
DROP TRIGGER IF EXISTS generations_account_deleted ON generations;
DROP TRIGGER IF EXISTS journal_entries_account_deleted ON journal_entries;
DROP TRIGGER IF EXISTS pair_members_account_deleted ON pair_members;
DROP TRIGGER IF EXISTS entitlements_account_deleted ON entitlements;
DROP TRIGGER IF EXISTS orders_account_deleted ON orders;
DROP TRIGGER IF EXISTS revenuecat_aliases_account_deleted ON revenuecat_aliases;
DROP TRIGGER IF EXISTS revenuecat_transfers_account_deleted ON revenuecat_transfers;
DROP TRIGGER IF EXISTS revenuecat_refunds_account_deleted ON revenuecat_refunds;
DROP FUNCTION IF EXISTS refuse_deleted_user();
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_deleted_holds_nothing, DROP COLUMN IF EXISTS deleted_at;
