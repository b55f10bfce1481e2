DROP TRIGGER IF EXISTS tools_catalog_version_bump ON tools;
DROP FUNCTION IF EXISTS tools_catalog_version_bump();
DROP TABLE IF EXISTS tools_catalog_version;
