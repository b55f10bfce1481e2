DROP TRIGGER IF EXISTS journal_entries_author_in_pair ON journal_entries;
DROP FUNCTION IF EXISTS journal_entries_author_in_pair();
DROP FUNCTION IF EXISTS journal_entries_visible_to(uuid);
