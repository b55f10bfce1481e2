-- The cache's write as a PL/pgSQL function, so that a write which is its own
-- transaction can commit without waiting for the WAL flush (synchronous_commit off for
-- that transaction only) in one statement, with nothing SET on the session (RDS Proxy
-- pins sessions that change settings). Measured in scripts/bench/cache.py: about 1.7x
-- faster than the same upsert with a synchronous commit.
-- depends: 0001_initial

-- p_async: commit this write without waiting for the WAL flush. Only for a write that is
-- its own transaction: an entry can always be computed again, and a crash can lose at
-- most the last few hundred milliseconds of such writes. A write inside a caller's
-- transaction (credits, a generation) passes false and keeps the caller's durability.
-- Returns the value as stored (jsonb-normalised), which is what readers will get.
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
