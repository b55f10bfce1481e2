DROP FUNCTION IF EXISTS cache_put(text, jsonb, double precision, integer, boolean);
