-- The tools catalog's version, kept by a trigger (docs/process-image.md, "The cache-hit
-- path"). process-image reads it on every cache hit to know whether its container's
-- catalog snapshot is current; it was a digest of every tools row as text, computed per
-- request (~0.2 ms of server CPU, most of the hit's statement). Now any statement that
-- changes tools (INSERT, UPDATE, DELETE, TRUNCATE) writes a new random version in its own
-- transaction, so a version names exactly one committed state of the catalog, also
-- across a restore (the row is backed up with the tools, in one snapshot).
-- depends: 0007_tools 0013_ai_features

CREATE TABLE tools_catalog_version (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version uuid NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO tools_catalog_version DEFAULT VALUES;

CREATE FUNCTION tools_catalog_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tools_catalog_version SET version = gen_random_uuid();
    RETURN NULL;
END
$$;

CREATE TRIGGER tools_catalog_version_bump
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tools
    FOR EACH STATEMENT EXECUTE FUNCTION tools_catalog_version_bump();
