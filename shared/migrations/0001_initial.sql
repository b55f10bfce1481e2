-- Initial schema: every table the design brief lists, with the invariants enforced by
-- the database itself (CHECK constraints, unique keys, foreign keys).
-- Applied by yoyo-migrations (scripts/migrate); never edit once released.
-- Needs PostgreSQL 13+ (built-in gen_random_uuid) and no extensions, so it runs on RDS
-- and on the embedded server alike.


CREATE TABLE users (
    id          uuid PRIMARY KEY,                       -- the JWT's sub
    email       text UNIQUE,
    credits     bigint NOT NULL DEFAULT 0 CHECK (credits >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Credit reservations: credits taken from the balance while paid work runs; settled
-- when the work succeeds, refunded when it fails or the reservation goes stale.
CREATE TABLE credit_reservations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amount          bigint NOT NULL CHECK (amount > 0),
    status          text NOT NULL DEFAULT 'reserved' CHECK (status IN ('reserved', 'settled', 'refunded')),
    idempotency_key text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    UNIQUE (user_id, idempotency_key),
    CHECK ((status = 'reserved') = (resolved_at IS NULL))
);
CREATE INDEX credit_reservations_open_idx ON credit_reservations (created_at) WHERE status = 'reserved';

-- Every change of a balance is one ledger row; sum(amount) per user = users.credits.
CREATE TABLE credit_ledger (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amount          bigint NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('grant', 'reserve', 'refund', 'clawback', 'adjust')),
    reason          text NOT NULL,
    source          text NOT NULL,                      -- e.g. revenuecat, stripe, paymob, reservation
    ref             text NOT NULL,                      -- idempotency reference within the source
    reservation_id  uuid REFERENCES credit_reservations (id),
    shortfall       bigint NOT NULL DEFAULT 0 CHECK (shortfall >= 0),  -- clawback that the balance could not cover
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, ref)
);
CREATE INDEX credit_ledger_user_idx ON credit_ledger (user_id, created_at);

CREATE TABLE tools (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('local', 'ai')),
    credit_cost     integer NOT NULL CHECK (credit_cost >= 0),
    params_schema   jsonb NOT NULL DEFAULT '{}'::jsonb,
    prompt_template text,
    prompt_version  integer NOT NULL DEFAULT 1,
    model           text,
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (kind = 'local' OR prompt_template IS NOT NULL)
);

CREATE TABLE generations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tool_id         text NOT NULL REFERENCES tools (id),
    params          jsonb NOT NULL DEFAULT '{}'::jsonb,
    source_key      text NOT NULL,
    result_key      text,
    status          text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    cache_key       text,
    credits_charged integer NOT NULL DEFAULT 0 CHECK (credits_charged >= 0),
    reservation_id  uuid REFERENCES credit_reservations (id),
    error_code      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'succeeded' OR result_key IS NOT NULL)
);
CREATE INDEX generations_user_idx ON generations (user_id, created_at DESC);

CREATE TABLE pairs (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pair_members (
    pair_id     uuid NOT NULL REFERENCES pairs (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,  -- one pair per user
    joined_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pair_id, user_id)
);

CREATE TABLE journal_entries (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    author_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    pair_id     uuid REFERENCES pairs (id) ON DELETE SET NULL,
    title       text,
    content     text NOT NULL,
    visibility  text NOT NULL DEFAULT 'private' CHECK (visibility IN ('private', 'shared')),
    analysis    jsonb,
    analyzed_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (visibility = 'private' OR pair_id IS NOT NULL)
);
CREATE INDEX journal_entries_author_idx ON journal_entries (author_id, created_at DESC);
CREATE INDEX journal_entries_pair_idx ON journal_entries (pair_id) WHERE pair_id IS NOT NULL;

-- The product catalog shared by RevenueCat, Stripe and Paymob: credit packs and plans.
CREATE TABLE products (
    id              text PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('credit_pack', 'plan')),
    name            text NOT NULL,
    credits         integer NOT NULL DEFAULT 0 CHECK (credits >= 0),
    entitlement_ids text[] NOT NULL DEFAULT '{}',
    period_days     integer CHECK (period_days > 0),
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (kind = 'credit_pack' OR cardinality(entitlement_ids) > 0)
);

-- Per-provider prices and store product ids (RevenueCat's product_id, Stripe's price id).
CREATE TABLE product_prices (
    product_id          text NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    provider            text NOT NULL CHECK (provider IN ('revenuecat', 'stripe', 'paymob')),
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount_minor        bigint NOT NULL CHECK (amount_minor >= 0),
    provider_product_id text,
    PRIMARY KEY (product_id, provider, currency),
    UNIQUE (provider, provider_product_id)
);

-- Entitlement state per user, entitlement and source; a pair shares its members' ones.
CREATE TABLE entitlements (
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    entitlement_id  text NOT NULL,
    source          text NOT NULL CHECK (source IN ('revenuecat', 'stripe', 'paymob')),
    expires_at      timestamptz,                        -- NULL: no expiry (lifetime)
    active          boolean NOT NULL DEFAULT true,
    will_renew      boolean NOT NULL DEFAULT false,
    store           text,
    environment     text,
    product_id      text,
    last_event_at   timestamptz NOT NULL,
    last_event_id   text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, entitlement_id, source)
);

CREATE TABLE orders (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid NOT NULL REFERENCES users (id),
    product_id          text NOT NULL REFERENCES products (id),
    provider            text NOT NULL CHECK (provider IN ('stripe', 'paymob')),
    status              text NOT NULL DEFAULT 'created'
                        CHECK (status IN ('created', 'pending', 'paid', 'failed', 'refunded')),
    amount_minor        bigint NOT NULL CHECK (amount_minor >= 0),
    currency            text NOT NULL,
    provider_order_id   text,                           -- Paymob intention_order_id, Stripe session id
    paid_at             timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_order_id)
);
CREATE INDEX orders_user_idx ON orders (user_id, created_at DESC);

CREATE TABLE payments (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id                uuid REFERENCES orders (id),
    provider                text NOT NULL CHECK (provider IN ('stripe', 'paymob')),
    provider_transaction_id text NOT NULL,
    status                  text NOT NULL,
    amount_minor            bigint NOT NULL,
    currency                text NOT NULL,
    raw                     jsonb NOT NULL,             -- the full callback, for audit
    created_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_transaction_id)
);
CREATE INDEX payments_order_idx ON payments (order_id);

CREATE TABLE webhook_inbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider        text NOT NULL,
    event_id        text NOT NULL,
    event_type      text,
    headers         jsonb NOT NULL DEFAULT '{}'::jsonb,
    body            text NOT NULL,
    signature_ok    boolean NOT NULL,
    status          text NOT NULL DEFAULT 'received'
                    CHECK (status IN ('received', 'processed', 'ignored', 'unmatched', 'failed')),
    attempts        integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    last_error      text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    UNIQUE (provider, event_id)
);
CREATE INDEX webhook_inbox_received_idx ON webhook_inbox (received_at);
CREATE INDEX webhook_inbox_unmatched_idx ON webhook_inbox (provider) WHERE status = 'unmatched';

-- The in-database cache. UNLOGGED or LOGGED is decided by the cache issue's benchmark.
CREATE TABLE cache_entries (
    key         text PRIMARY KEY,
    value       jsonb NOT NULL,
    expires_at  timestamptz NOT NULL,
    compute_ms  integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cache_entries_expires_idx ON cache_entries (expires_at);

CREATE TABLE rate_limit_windows (
    subject      text NOT NULL,                         -- user id (or client address)
    route        text NOT NULL,
    window_start timestamptz NOT NULL,
    hits         integer NOT NULL DEFAULT 0 CHECK (hits >= 0),
    PRIMARY KEY (subject, route, window_start)
);
CREATE INDEX rate_limit_windows_start_idx ON rate_limit_windows (window_start);

-- Client Idempotency-Key records (Powertools idempotency persistence layer).
CREATE TABLE idempotency_records (
    id                      text PRIMARY KEY,
    status                  text NOT NULL CHECK (status IN ('INPROGRESS', 'COMPLETED', 'EXPIRED')),
    expires_at              timestamptz NOT NULL,
    in_progress_expiry_ms   bigint,
    response_data           text,
    payload_hash            text,
    created_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_records_expires_idx ON idempotency_records (expires_at);

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor       text NOT NULL,                          -- user id, provider or job name
    action      text NOT NULL,
    subject     text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_created_idx ON audit_log (created_at);
