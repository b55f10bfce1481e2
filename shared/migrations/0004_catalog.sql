-- The product catalog shared by RevenueCat (store product ids), Stripe and Paymob (web
-- prices): credit packs and plans. Editable without a deploy: change rows, not code.
-- depends: 0001_initial

INSERT INTO products (id, kind, name, credits, entitlement_ids, period_days) VALUES
    ('credits_50',      'credit_pack', '50 credits',        50,  '{}',          NULL),
    ('credits_200',     'credit_pack', '200 credits',       200, '{}',          NULL),
    ('premium_monthly', 'plan',        'Premium (monthly)', 0,   '{premium}',   30),
    ('premium_yearly',  'plan',        'Premium (yearly)',  0,   '{premium}',   365)
ON CONFLICT (id) DO NOTHING;

-- amount_minor is in the currency's minor unit (cents, piastres, fils).
INSERT INTO product_prices (product_id, provider, currency, amount_minor, provider_product_id) VALUES
    ('credits_50',      'revenuecat', 'USD', 499,    'com.example.photo.credits50'),
    ('credits_200',     'revenuecat', 'USD', 1499,   'com.example.photo.credits200'),
    ('premium_monthly', 'revenuecat', 'USD', 799,    'com.example.journal.premium.monthly'),
    ('premium_yearly',  'revenuecat', 'USD', 5999,   'com.example.journal.premium.yearly'),
    ('credits_50',      'stripe',     'USD', 499,    NULL),
    ('credits_200',     'stripe',     'USD', 1499,   NULL),
    ('premium_monthly', 'stripe',     'USD', 799,    NULL),
    ('premium_yearly',  'stripe',     'USD', 5999,   NULL),
    ('credits_50',      'paymob',     'EGP', 25000,  NULL),
    ('credits_50',      'paymob',     'AED', 1900,   NULL),
    ('credits_200',     'paymob',     'EGP', 75000,  NULL),
    ('premium_monthly', 'paymob',     'EGP', 39900,  NULL),
    ('premium_yearly',  'paymob',     'EGP', 299900, NULL)
ON CONFLICT DO NOTHING;
