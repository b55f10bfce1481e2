-- Accounts (the account function, docs/account.md): pairing by invite code, the pair-level
-- audit trail, data exports, and account deletion with its tombstone and deletions log.
--
-- What the database decides here, whatever the code does:
-- - a deleted account (users.deleted_at) holds no personal data and gets no new rows:
--   every table that names a user refuses a row for a deleted one (trigger
--   refuse_deleted_user, constraint name "account_deleted"), so a request or webhook that
--   raced the deletion fails instead of re-creating data, and webhooks park;
-- - a pair has two members at most and a dissolved pair gets none;
-- - one export runs at a time per user;
-- - delete_account() is the one definition of a deletion, used by DELETE /me and
--   re-applied by scripts/restore from the deletions log.
-- depends: 0010_inbox_raw_bytes

-- --- Tombstones ----------------------------------------------------------------------
-- A deleted account keeps its users row (the tombstone: its id, nothing else), so an old
-- token or a webhook naming it finds it deleted instead of provisioning it again. The
-- accounting rows it had (ledger, reservations, orders and their payments) move to a new
-- users row with a random id and no link back: pseudonymised.
ALTER TABLE users
    ADD COLUMN deleted_at timestamptz,
    ADD CONSTRAINT users_deleted_holds_nothing CHECK (deleted_at IS NULL OR (email IS NULL AND credits = 0));

-- Refuses a row naming a deleted user in the columns given as trigger arguments. The
-- KEY SHARE lock waits for a deletion in progress (which holds the user row FOR UPDATE)
-- and then reads the row as it committed.
CREATE FUNCTION refuse_deleted_user() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    col text;
    uid uuid;
    gone timestamptz;
BEGIN
    FOREACH col IN ARRAY TG_ARGV LOOP
        EXECUTE format('SELECT ($1).%I', col) INTO uid USING NEW;
        CONTINUE WHEN uid IS NULL;
        SELECT deleted_at INTO gone FROM users WHERE id = uid FOR KEY SHARE;
        IF gone IS NOT NULL THEN
            RAISE EXCEPTION 'this account has been deleted'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'account_deleted';
        END IF;
    END LOOP;
    RETURN NEW;
END
$$;

CREATE TRIGGER credit_reservations_account_deleted BEFORE INSERT OR UPDATE OF user_id ON credit_reservations
    FOR EACH ROW EXECUTE FUNCTION refuse_deleted_user('user_id');
CREATE TRIGGER credit_ledger_account_deleted BEFORE INSERT OR UPDATE OF user_id ON credit_ledger
    FOR EACH ROW EXECUTE FUNCTION refuse_deleted_user('user_id');
CREATE TRIGGER generations_account_deleted BEFORE INSERT OR UPDATE OF user_id ON generations
    FOR EACH ROW EXECUTE FUNCTION refuse_deleted_user('user_id');
CREATE TRIGGER journal_entries_account_deleted BEFORE INSERT OR UPDATE OF author_id ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION refuse_deleted_user('author_id');
CREATE TRIGGER pair_members_account_deleted BEFORE INSERT OR UPDATE OF user_id ON pair_members
    FOR EACH ROW EXECUTE FUNCTION refuse_deleted_user('user_id');
CREATE TRIGGER entitlements_account_deleted BEFORE INSERT OR UPDATE ON entitlements
    FOR EACH ROW EXECUTE FUNCTION refuse_deleted_user('user_id');
-- Orders on any update: a payment event for a deleted account is parked, not applied.
CREATE TRIGGER orders_account_deleted BEFORE INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION refuse_deleted_user('user_id');
CREATE TRIGGER revenuecat_aliases_account_deleted BEFORE INSERT OR UPDATE OF user_id ON revenuecat_aliases
    FOR EACH ROW EXECUTE FUNCTION refuse_deleted_user('user_id');
CREATE TRIGGER revenuecat_transfers_account_deleted BEFORE INSERT OR UPDATE ON revenuecat_transfers
    FOR EACH ROW EXECUTE FUNCTION refuse_deleted_user('from_user', 'to_user');
CREATE TRIGGER revenuecat_refunds_account_deleted BEFORE INSERT OR UPDATE ON revenuecat_refunds
    FOR EACH ROW EXECUTE FUNCTION refuse_deleted_user('user_id');

-- Webhook deliveries for a deleted account are kept as 'parked' (not applied), without
-- their body and headers.
ALTER TABLE webhook_inbox DROP CONSTRAINT webhook_inbox_status_check;
ALTER TABLE webhook_inbox ADD CONSTRAINT webhook_inbox_status_check
    CHECK (status IN ('received', 'processed', 'ignored', 'unmatched', 'failed', 'parked'));

-- Whose rows these are, so that a deletion can find them (the keys are hashes).
ALTER TABLE idempotency_records ADD COLUMN owner uuid;
CREATE INDEX idempotency_records_owner_idx ON idempotency_records (owner) WHERE owner IS NOT NULL;
ALTER TABLE cache_entries ADD COLUMN owner uuid;
CREATE INDEX cache_entries_owner_idx ON cache_entries (owner) WHERE owner IS NOT NULL;

DROP FUNCTION cache_put(text, jsonb, double precision, integer, boolean);
-- As in 0002, plus the entry's owner (a user id, or NULL for shared entries).
CREATE FUNCTION cache_put(p_key text, p_value jsonb, p_ttl_s double precision,
                          p_compute_ms integer, p_async boolean, p_owner uuid DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    stored jsonb;
BEGIN
    IF p_async THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    INSERT INTO cache_entries (key, value, expires_at, compute_ms, owner)
    VALUES (p_key, p_value, now() + make_interval(secs => p_ttl_s), p_compute_ms, p_owner)
    ON CONFLICT (key) DO UPDATE
       SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at,
           compute_ms = EXCLUDED.compute_ms, created_at = now(), owner = EXCLUDED.owner
    RETURNING value INTO stored;
    RETURN stored;
END
$$;

-- --- Pairs -----------------------------------------------------------------------------
-- Unlinking dissolves a pair: its members go, the row stays (its audit trail refers to it).
ALTER TABLE pairs ADD COLUMN dissolved_at timestamptz;

-- Two members at most, and none joins a dissolved pair. The pair row lock serialises
-- concurrent joins of one pair; the count then sees every committed member. A row that
-- is already there (an INSERT ... ON CONFLICT DO NOTHING repeating it: BEFORE triggers run
-- before the conflict check) is let through to its conflict.
CREATE FUNCTION pair_members_limit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    dissolved timestamptz;
BEGIN
    SELECT dissolved_at INTO dissolved FROM pairs WHERE id = NEW.pair_id FOR NO KEY UPDATE;
    IF EXISTS (SELECT 1 FROM pair_members WHERE pair_id = NEW.pair_id AND user_id = NEW.user_id) THEN
        RETURN NEW;
    END IF;
    IF dissolved IS NOT NULL THEN
        RAISE EXCEPTION 'this pair has been dissolved'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'pair_members_dissolved';
    END IF;
    IF (SELECT count(*) FROM pair_members WHERE pair_id = NEW.pair_id AND user_id <> NEW.user_id) >= 2 THEN
        RAISE EXCEPTION 'a pair has two members at most'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'pair_members_two';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER pair_members_limit BEFORE INSERT OR UPDATE OF pair_id ON pair_members
    FOR EACH ROW EXECUTE FUNCTION pair_members_limit();

-- Invite codes are stored as their SHA-256 only (a code is a bearer secret for joining).
CREATE TABLE pair_invites (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    inviter_id  uuid NOT NULL REFERENCES users (id),
    code_sha256 bytea NOT NULL UNIQUE CHECK (octet_length(code_sha256) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    used_by     uuid REFERENCES users (id),
    pair_id     uuid REFERENCES pairs (id),
    revoked_at  timestamptz,
    CHECK (expires_at > created_at),
    CHECK ((used_at IS NULL) = (used_by IS NULL) AND (used_at IS NULL) = (pair_id IS NULL)),
    CHECK (used_by <> inviter_id),
    CHECK (used_at IS NULL OR revoked_at IS NULL)
);
CREATE INDEX pair_invites_open_idx ON pair_invites (inviter_id) WHERE used_at IS NULL AND revoked_at IS NULL;
CREATE INDEX pair_invites_used_by_idx ON pair_invites (used_by) WHERE used_by IS NOT NULL;
-- cache-cleanup purges invites that were never used, some days after they ended.
CREATE INDEX pair_invites_unused_expires_idx ON pair_invites (expires_at) WHERE used_at IS NULL;
CREATE TRIGGER pair_invites_account_deleted BEFORE INSERT OR UPDATE ON pair_invites
    FOR EACH ROW EXECUTE FUNCTION refuse_deleted_user('inviter_id', 'used_by');

-- The pair-level audit trail: invites, joins, unlinks, entries shared and unshared. Each
-- row is readable by the users in visible_to (both members when it happened; a pending
-- invite only by its inviter), after an unlink too. Ids and actions only, no content.
CREATE TABLE pair_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pair_id     uuid REFERENCES pairs (id),
    action      text NOT NULL CHECK (action IN ('invite_created', 'invite_revoked', 'joined', 'unlinked',
                                                'entry_shared', 'entry_unshared')),
    actor_id    uuid,                                   -- NULL once the actor's account is deleted
    entry_id    uuid,                                   -- entry events
    details     jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(details) = 'object'),
    visible_to  uuid[] NOT NULL CHECK (cardinality(visible_to) BETWEEN 1 AND 2),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pair_audit_visible_idx ON pair_audit USING gin (visible_to);
CREATE INDEX pair_audit_pair_idx ON pair_audit (pair_id) WHERE pair_id IS NOT NULL;
-- A join finds its invite's row to move it into the pair's trail.
CREATE INDEX pair_audit_pending_invite_idx ON pair_audit ((details ->> 'invite_id')) WHERE pair_id IS NULL;

-- Entries shared or unshared in a pair are audited by the database, whichever code
-- writes them: an insert or update that makes an entry visible to the pair, an update
-- that makes it private again or moves it, and the deletion of a shared entry. Nothing is
-- written for a pair without two members (a dissolved pair: unlinking made its entries
-- private, and says so itself).
CREATE FUNCTION journal_entries_pair_audit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    was_shared boolean := TG_OP <> 'INSERT' AND OLD.visibility = 'shared' AND OLD.pair_id IS NOT NULL;
    is_shared boolean := TG_OP <> 'DELETE' AND NEW.visibility = 'shared' AND NEW.pair_id IS NOT NULL;
    members uuid[];
BEGIN
    IF was_shared AND (NOT is_shared OR OLD.pair_id <> NEW.pair_id) THEN
        members := ARRAY(SELECT user_id FROM pair_members WHERE pair_id = OLD.pair_id ORDER BY user_id);
        IF cardinality(members) = 2 THEN
            INSERT INTO pair_audit (pair_id, action, actor_id, entry_id, details, visible_to)
            VALUES (OLD.pair_id, 'entry_unshared', OLD.author_id, OLD.id,
                    CASE WHEN TG_OP = 'DELETE' THEN '{"reason": "deleted"}'::jsonb ELSE '{}'::jsonb END, members);
        END IF;
    END IF;
    IF is_shared AND (NOT was_shared OR OLD.pair_id <> NEW.pair_id) THEN
        members := ARRAY(SELECT user_id FROM pair_members WHERE pair_id = NEW.pair_id ORDER BY user_id);
        IF cardinality(members) = 2 THEN
            INSERT INTO pair_audit (pair_id, action, actor_id, entry_id, visible_to)
            VALUES (NEW.pair_id, 'entry_shared', NEW.author_id, NEW.id, members);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER journal_entries_pair_audit AFTER INSERT OR UPDATE OF visibility, pair_id OR DELETE
    ON journal_entries FOR EACH ROW EXECUTE FUNCTION journal_entries_pair_audit();

-- Dissolve a pair: its members leave, the entries shared in it become private to their
-- authors, and both members read why in the audit. Returns the former members.
CREATE FUNCTION unlink_pair(p_pair uuid, p_actor uuid, p_reason text) RETURNS uuid[]
LANGUAGE plpgsql AS $$
DECLARE
    members uuid[];
BEGIN
    PERFORM 1 FROM pairs WHERE id = p_pair AND dissolved_at IS NULL FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN '{}';
    END IF;
    WITH gone AS (DELETE FROM pair_members WHERE pair_id = p_pair RETURNING user_id)
    SELECT coalesce(array_agg(user_id ORDER BY user_id), '{}') INTO members FROM gone;
    UPDATE pairs SET dissolved_at = now() WHERE id = p_pair;
    UPDATE journal_entries SET visibility = 'private', updated_at = now()
     WHERE pair_id = p_pair AND visibility = 'shared';
    IF cardinality(members) > 0 THEN
        INSERT INTO pair_audit (pair_id, action, actor_id, details, visible_to)
        VALUES (p_pair, 'unlinked', p_actor, jsonb_build_object('reason', p_reason), members);
    END IF;
    RETURN members;
END
$$;

-- --- Exports ---------------------------------------------------------------------------
-- A queue of export jobs, worked by the account function's schedule (FOR UPDATE SKIP
-- LOCKED); the archive lives in the exports bucket until expires_at.
CREATE TABLE account_exports (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL REFERENCES users (id),
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'completed', 'failed', 'expired')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    completed_at    timestamptz,
    expires_at      timestamptz,
    object_key      text,
    size_bytes      bigint CHECK (size_bytes >= 0),
    sha256          text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    error_code      text,
    CHECK ((status = 'completed') = (object_key IS NOT NULL)),
    CHECK (status NOT IN ('completed', 'expired') OR (completed_at IS NOT NULL AND expires_at IS NOT NULL)),
    CHECK (status <> 'running' OR started_at IS NOT NULL)
);
-- One export in progress per user.
CREATE UNIQUE INDEX account_exports_one_active_idx ON account_exports (user_id) WHERE status IN ('queued', 'running');
CREATE INDEX account_exports_queue_idx ON account_exports (created_at) WHERE status IN ('queued', 'running');
CREATE INDEX account_exports_user_idx ON account_exports (user_id, created_at DESC);
CREATE INDEX account_exports_expiry_idx ON account_exports (expires_at) WHERE status = 'completed';
CREATE TRIGGER account_exports_account_deleted BEFORE INSERT OR UPDATE OF user_id ON account_exports
    FOR EACH ROW EXECUTE FUNCTION refuse_deleted_user('user_id');

-- --- Deletion ---------------------------------------------------------------------------
-- The deletions log: one row per deleted account, copied to the backups bucket
-- (deletions/<stage>/<user id>.json, logged_at) so that a restore of an older backup
-- re-applies it. The tombstone is the users row of the same id.
CREATE TABLE account_deletions (
    user_id     uuid PRIMARY KEY REFERENCES users (id),
    deleted_at  timestamptz NOT NULL,
    logged_at   timestamptz
);
CREATE INDEX account_deletions_unlogged_idx ON account_deletions (deleted_at) WHERE logged_at IS NULL;

-- Objects under a deleted user's prefix, deleted after the commit and swept again until
-- keep_until (an upload form or a generation still in flight may add one); retried by
-- cache-cleanup with backoff until done, then the row goes.
CREATE TABLE account_object_deletions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bucket_setting  text NOT NULL CHECK (bucket_setting IN ('UPLOADS_BUCKET', 'GENERATIONS_BUCKET', 'EXPORTS_BUCKET')),
    prefix          text NOT NULL CHECK (prefix ~ '^users/[0-9a-f-]{36}/$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    keep_until      timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    objects_deleted bigint NOT NULL DEFAULT 0,
    last_error      text,
    UNIQUE (bucket_setting, prefix)
);
CREATE INDEX account_object_deletions_due_idx ON account_object_deletions (next_attempt_at);

-- Webhook deliveries that mention a deleted account (its id, its aliases, its orders' and
-- payments' provider ids) lose their body and headers; done in bounded batches of ids by
-- cache-cleanup (the inbox has no user column to find them by).
CREATE TABLE account_inbox_scrubs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    needles     text[] NOT NULL,
    next_id     bigint NOT NULL,
    last_id     bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Delete an account (DELETE /me, and scripts/restore re-applying the log), in the
-- caller's transaction. Idempotent: 'deleted' (done now), 'already_deleted', or
-- 'tombstoned' (no such user here: only the tombstone is made, so that the id can never
-- be provisioned again). Keeps what accounting needs under a new random id; removes the
-- rest. A migration that adds a table naming users must extend this function (a test
-- checks that no row names a deleted user).
CREATE FUNCTION delete_account(p_user uuid, p_at timestamptz DEFAULT now()) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    found_user users%ROWTYPE;
    pseudonym uuid := gen_random_uuid();
    pair uuid;
    refunded bigint;
    balance bigint;
    needles text[];
    inbox_top bigint;
BEGIN
    SELECT * INTO found_user FROM users WHERE id = p_user FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO users (id, created_at, updated_at, deleted_at) VALUES (p_user, p_at, p_at, p_at)
        ON CONFLICT (id) DO NOTHING;
        IF FOUND THEN
            INSERT INTO account_deletions (user_id, deleted_at) VALUES (p_user, p_at) ON CONFLICT DO NOTHING;
            RETURN 'tombstoned';
        END IF;
        -- provisioned meanwhile: delete it like any other
        SELECT * INTO found_user FROM users WHERE id = p_user FOR UPDATE;
    END IF;
    IF found_user.deleted_at IS NOT NULL THEN
        RETURN 'already_deleted';
    END IF;

    -- The pair dissolves; the partner reads why in the audit.
    SELECT pair_id INTO pair FROM pair_members WHERE user_id = p_user;
    IF pair IS NOT NULL THEN
        PERFORM unlink_pair(pair, p_user, 'account_deleted');
    END IF;

    -- What webhook deliveries may mention, gathered before the rows go.
    needles := ARRAY(
        SELECT DISTINCT n FROM (
            SELECT p_user::text AS n
            UNION ALL SELECT app_user_id FROM revenuecat_aliases WHERE user_id = p_user
            UNION ALL SELECT id::text FROM orders WHERE user_id = p_user
            UNION ALL SELECT unnest(ARRAY[provider_order_id, provider_checkout_id, subscription_id])
                        FROM orders WHERE user_id = p_user
            UNION ALL SELECT unnest(ARRAY[pay.provider_transaction_id, pay.payment_intent_id])
                        FROM payments pay JOIN orders o ON o.id = pay.order_id WHERE o.user_id = p_user
        ) s WHERE length(n) >= 8);
    SELECT max(id) INTO inbox_top FROM webhook_inbox;
    IF inbox_top IS NOT NULL THEN
        INSERT INTO account_inbox_scrubs (needles, next_id, last_id) VALUES (needles, 1, inbox_top);
    END IF;
    -- Unmatched RevenueCat events waiting for this user will never apply: parked, emptied.
    WITH gone AS (
        DELETE FROM revenuecat_pending
         WHERE app_user_id = p_user::text
            OR app_user_id IN (SELECT app_user_id FROM revenuecat_aliases WHERE user_id = p_user)
        RETURNING inbox_id
    )
    UPDATE webhook_inbox SET body = ''::bytea, headers = '{}', status = 'parked', last_error = 'account deleted'
     WHERE id IN (SELECT inbox_id FROM gone) AND status NOT IN ('processed', 'ignored');

    -- Objects under users/<id>/ in the three buckets: after the commit, and retried.
    INSERT INTO account_object_deletions (bucket_setting, prefix, keep_until)
    SELECT b, 'users/' || p_user || '/', p_at + interval '2 hours'
      FROM unnest(ARRAY['UPLOADS_BUCKET', 'GENERATIONS_BUCKET', 'EXPORTS_BUCKET']) AS b
    ON CONFLICT (bucket_setting, prefix) DO UPDATE SET keep_until = EXCLUDED.keep_until, next_attempt_at = now();

    -- What only the user had.
    DELETE FROM pair_invites WHERE inviter_id = p_user OR used_by = p_user;
    DELETE FROM generations WHERE user_id = p_user;
    DELETE FROM journal_entries WHERE author_id = p_user;
    DELETE FROM entitlements WHERE user_id = p_user;
    DELETE FROM revenuecat_aliases WHERE user_id = p_user;
    DELETE FROM revenuecat_transfers WHERE from_user = p_user OR to_user = p_user;
    DELETE FROM account_exports WHERE user_id = p_user;
    DELETE FROM cache_entries WHERE owner = p_user;
    DELETE FROM idempotency_records WHERE owner = p_user;
    DELETE FROM rate_limit_windows WHERE subject = p_user::text;
    -- The audit trails the user shared: they leave them; rows nobody else reads go.
    DELETE FROM pair_audit WHERE visible_to = ARRAY[p_user];
    UPDATE pair_audit SET actor_id = NULL, entry_id = NULL WHERE actor_id = p_user;
    UPDATE pair_audit SET visible_to = array_remove(visible_to, p_user) WHERE visible_to @> ARRAY[p_user];

    -- Accounting: open reservations are refunded, then the balance is forfeited, and
    -- every accounting row moves to the pseudonym (its balance: 0 = the sum of its rows).
    WITH res AS (
        UPDATE credit_reservations SET status = 'refunded', resolved_at = p_at
         WHERE user_id = p_user AND status = 'reserved'
        RETURNING id, amount
    ), entry AS (
        INSERT INTO credit_ledger (user_id, amount, kind, reason, source, ref, reservation_id)
        SELECT p_user, amount, 'refund', 'account deleted', 'reservation', id::text || ':refund', id FROM res
        RETURNING amount
    )
    SELECT coalesce(sum(amount), 0) INTO refunded FROM entry;
    balance := found_user.credits + refunded;
    IF balance > 0 THEN
        INSERT INTO credit_ledger (user_id, amount, kind, reason, source, ref)
        VALUES (p_user, -balance, 'adjust', 'account deleted: balance forfeited', 'account', 'deleted:' || pseudonym);
    END IF;
    INSERT INTO users (id, created_at, updated_at) VALUES (pseudonym, p_at, p_at);
    UPDATE credit_ledger SET user_id = pseudonym WHERE user_id = p_user;
    UPDATE credit_reservations SET user_id = pseudonym WHERE user_id = p_user;
    UPDATE orders SET user_id = pseudonym WHERE user_id = p_user;
    UPDATE revenuecat_refunds SET user_id = pseudonym WHERE user_id = p_user;
    -- The providers' callbacks hold names, emails, card details: amounts, ids and states stay.
    UPDATE payments SET raw = '{"redacted": "account deleted"}'::jsonb
     WHERE order_id IN (SELECT id FROM orders WHERE user_id = pseudonym);
    UPDATE users SET credits = 0, deleted_at = p_at WHERE id = pseudonym;

    -- The tombstone, and the log a restore re-applies.
    UPDATE users SET email = NULL, credits = 0, created_at = p_at, updated_at = p_at, deleted_at = p_at
     WHERE id = p_user;
    INSERT INTO account_deletions (user_id, deleted_at) VALUES (p_user, p_at) ON CONFLICT DO NOTHING;
    RETURN 'deleted';
END
$$;
