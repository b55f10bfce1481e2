DELETE FROM product_prices WHERE product_id IN ('credits_50', 'credits_200', 'premium_monthly', 'premium_yearly');
DELETE FROM products WHERE id IN ('credits_50', 'credits_200', 'premium_monthly', 'premium_yearly');
