DROP TABLE IF EXISTS cache_leases;
