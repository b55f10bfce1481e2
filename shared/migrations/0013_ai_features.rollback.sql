DROP TRIGGER IF EXISTS journal_attachments_author_is_entry_author ON journal_attachments;
DROP FUNCTION IF EXISTS journal_attachments_author_is_entry_author();
DROP TABLE IF EXISTS journal_attachments;
DELETE FROM generations WHERE tool_id = 'face_analysis';
DELETE FROM tool_versions WHERE tool_id = 'face_analysis';
DELETE FROM tools WHERE id = 'face_analysis';
DELETE FROM generations WHERE result_key IS NULL AND status = 'succeeded';
ALTER TABLE generations DROP CONSTRAINT IF EXISTS generations_succeeded_has_result;
ALTER TABLE generations ADD CONSTRAINT generations_check CHECK (status <> 'succeeded' OR result_key IS NOT NULL);
ALTER TABLE generations DROP COLUMN IF EXISTS result;
ALTER TABLE tools
    DROP CONSTRAINT IF EXISTS tools_offline_cost_analysis_only,
    DROP COLUMN IF EXISTS offline_credit_cost,
    DROP CONSTRAINT IF EXISTS tools_kind_check;
ALTER TABLE tools ADD CONSTRAINT tools_kind_check CHECK (kind IN ('local', 'ai'));
