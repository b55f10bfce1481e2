DELETE FROM generations WHERE tool_id IN (
    'resize', 'crop', 'rotate', 'auto_orient', 'grayscale', 'blur', 'sharpen', 'thumbnail', 'convert',
    'strip_metadata', 'hairstyle', 'hair_color', 'background_remove', 'background_replace', 'restore',
    'style_transfer');
DROP INDEX IF EXISTS generations_reservation_uniq;
ALTER TABLE generations
    DROP CONSTRAINT IF EXISTS generations_tool_version_fk,
    DROP CONSTRAINT IF EXISTS generations_paid_by_reservation,
    DROP COLUMN IF EXISTS tool_version,
    DROP COLUMN IF EXISTS model,
    DROP COLUMN IF EXISTS source_etag,
    DROP COLUMN IF EXISTS result_content_type,
    DROP COLUMN IF EXISTS result_bytes,
    DROP COLUMN IF EXISTS width,
    DROP COLUMN IF EXISTS height;
DROP TRIGGER IF EXISTS tools_version_record ON tools;
DROP TRIGGER IF EXISTS tools_version_guard ON tools;
DROP FUNCTION IF EXISTS tools_version_record();
DROP FUNCTION IF EXISTS tools_version_guard();
DROP TABLE IF EXISTS tool_versions;
DELETE FROM tools WHERE id IN (
    'resize', 'crop', 'rotate', 'auto_orient', 'grayscale', 'blur', 'sharpen', 'thumbnail', 'convert',
    'strip_metadata', 'hairstyle', 'hair_color', 'background_remove', 'background_replace', 'restore',
    'style_transfer');
ALTER TABLE tools
    DROP CONSTRAINT IF EXISTS tools_id_format,
    DROP CONSTRAINT IF EXISTS tools_params_schema_object,
    DROP CONSTRAINT IF EXISTS tools_prompt_version_positive,
    DROP COLUMN IF EXISTS description,
    DROP COLUMN IF EXISTS output_format,
    DROP COLUMN IF EXISTS ai_options,
    DROP COLUMN IF EXISTS sort_order;
