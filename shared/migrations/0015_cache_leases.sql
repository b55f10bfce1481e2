-- Single-flight leases for the cache (docs/cache.md, issue 14).
--
-- A caller that misses a key takes the key's lease (one row, with an expiry) in one
-- autocommit statement, runs the slow tool holding no transaction and no second
-- connection, stores the value, then deletes its lease. Other callers poll: they find the
-- value, or take the lease once it is released or has expired (a holder that died).
-- Replaces the advisory lock held in a transaction on a second connection through the
-- whole tool call. Leases are kept for seconds: no backup, no cleanup job needs them.
-- depends: 0002_cache_put

CREATE UNLOGGED TABLE cache_leases (
    key text PRIMARY KEY,
    holder uuid NOT NULL,
    expires_at timestamptz NOT NULL
);
