-- Journal entries (analyze-entry): who may read an entry, and whose pair an entry may
-- name, decided by the database.
-- depends: 0001_initial

-- The entries a user may read: their own, and the shared entries of the pair they are
-- in, written while the author is still in that pair. Every read of an entry on behalf
-- of a user goes through this function:
--     SELECT ... FROM journal_entries_visible_to($viewer) WHERE id = $id
-- A plain SQL, STABLE, non-strict set-returning function: the planner inlines it, so
-- the id lookup stays an index scan.
CREATE FUNCTION journal_entries_visible_to(viewer uuid)
RETURNS SETOF journal_entries
LANGUAGE sql STABLE
AS $$
    SELECT e.*
      FROM journal_entries e
     WHERE e.author_id = viewer
        OR (e.visibility = 'shared'
            AND EXISTS (SELECT 1
                          FROM pair_members reader
                          JOIN pair_members author ON author.pair_id = reader.pair_id
                         WHERE reader.user_id = viewer
                           AND reader.pair_id = e.pair_id
                           AND author.user_id = e.author_id))
$$;

COMMENT ON FUNCTION journal_entries_visible_to(uuid) IS
    'Journal entries the user may read: authored by them, or shared in their pair by its other member.';

-- An entry may name a pair only if its author is a member of it (when written). The
-- membership row is locked (KEY SHARE) until the writing transaction ends, so a
-- concurrent unlink waits for it rather than slipping in between.
CREATE FUNCTION journal_entries_author_in_pair() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.pair_id IS NOT NULL THEN
        PERFORM 1 FROM pair_members
         WHERE pair_id = NEW.pair_id AND user_id = NEW.author_id
           FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the author of a journal entry must be a member of its pair'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'journal_entries_author_in_pair';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER journal_entries_author_in_pair
    BEFORE INSERT OR UPDATE OF pair_id, author_id ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION journal_entries_author_in_pair();
