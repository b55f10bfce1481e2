DROP TABLE IF EXISTS revenuecat_currencies;
DROP TABLE IF EXISTS revenuecat_refunds;
DROP TABLE IF EXISTS revenuecat_transfers;
DROP TABLE IF EXISTS revenuecat_pending;
DROP TABLE IF EXISTS revenuecat_aliases;
DROP FUNCTION IF EXISTS has_entitlement(uuid, text);
DROP VIEW IF EXISTS active_entitlements;
ALTER TABLE entitlements DROP COLUMN IF EXISTS last_event_type, DROP COLUMN IF EXISTS period_type;
