-- Back to text. Fails on a body that is not valid UTF-8 or holds a NUL byte: such rows
-- can only exist since 0010, and must be exported (they are signed evidence) and deleted
-- before rolling back.
ALTER TABLE webhook_inbox ALTER COLUMN body TYPE text USING convert_from(body, 'UTF8');
