-- process-image: the tools catalog (local Pillow tools and AI image edits), versioned
-- prompt templates, and what a generation records about how it was made.
--
-- tools.prompt_version is the tool's version: the prompt template's for AI tools, the
-- parameter schema's for every tool. It is part of every generation's cache key, so the
-- database refuses to change a prompt template or a parameter schema without raising it
-- (trigger below), and keeps every version in tool_versions (generations point at the
-- exact prompt that made them). Parameter schemas are JSON Schema (draft-07): typed,
-- bounded, enums for everything an AI prompt receives; never free text.
-- depends: 0001_initial 0003_ledger_inbox

ALTER TABLE tools
    ADD COLUMN description   text NOT NULL DEFAULT '',
    -- NULL: the source's format (HEIC sources give JPEG); the convert tool takes a parameter.
    ADD COLUMN output_format text CHECK (output_format IN ('jpeg', 'png', 'webp')),
    -- Extra options for the provider's image edit call (an allow-list in ai_tools.py).
    ADD COLUMN ai_options    jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(ai_options) = 'object'),
    ADD COLUMN sort_order    integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT tools_id_format CHECK (id ~ '^[a-z][a-z0-9_]{1,39}$'),
    ADD CONSTRAINT tools_params_schema_object CHECK (jsonb_typeof(params_schema) = 'object'),
    ADD CONSTRAINT tools_prompt_version_positive CHECK (prompt_version >= 1);

CREATE TABLE tool_versions (
    tool_id         text NOT NULL REFERENCES tools (id) ON DELETE CASCADE,
    version         integer NOT NULL,
    params_schema   jsonb NOT NULL,
    prompt_template text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tool_id, version)
);

CREATE FUNCTION tools_version_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (NEW.prompt_template IS DISTINCT FROM OLD.prompt_template
            OR NEW.params_schema IS DISTINCT FROM OLD.params_schema)
       AND NEW.prompt_version <= OLD.prompt_version THEN
        RAISE EXCEPTION 'tool %: raise prompt_version when changing its prompt or parameter schema', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.prompt_version < OLD.prompt_version THEN
        RAISE EXCEPTION 'tool %: prompt_version cannot go back', NEW.id USING ERRCODE = 'check_violation';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE FUNCTION tools_version_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tool_versions (tool_id, version, params_schema, prompt_template)
    VALUES (NEW.id, NEW.prompt_version, NEW.params_schema, NEW.prompt_template)
    ON CONFLICT (tool_id, version) DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER tools_version_guard BEFORE UPDATE ON tools
    FOR EACH ROW EXECUTE FUNCTION tools_version_guard();
CREATE TRIGGER tools_version_record AFTER INSERT OR UPDATE OF prompt_version, prompt_template, params_schema
    ON tools FOR EACH ROW EXECUTE FUNCTION tools_version_record();

ALTER TABLE generations
    ADD COLUMN tool_version        integer,
    ADD COLUMN model               text,
    ADD COLUMN source_etag         text,
    ADD COLUMN result_content_type text,
    ADD COLUMN result_bytes        bigint CHECK (result_bytes >= 0),
    ADD COLUMN width               integer CHECK (width > 0),
    ADD COLUMN height              integer CHECK (height > 0),
    -- A paid generation names the reservation that paid for it, and a reservation pays
    -- for one generation at most.
    ADD CONSTRAINT generations_paid_by_reservation CHECK (credits_charged = 0 OR reservation_id IS NOT NULL),
    ADD CONSTRAINT generations_tool_version_fk FOREIGN KEY (tool_id, tool_version)
        REFERENCES tool_versions (tool_id, version);
CREATE UNIQUE INDEX generations_reservation_uniq ON generations (reservation_id) WHERE reservation_id IS NOT NULL;

-- The catalog. Costs are credits; a schema's defaults are filled in before the cache key
-- is computed, so {} and {"radius": 2} are the same request.
INSERT INTO tools (id, name, kind, credit_cost, sort_order, description, output_format, params_schema) VALUES
('resize', 'Resize', 'local', 1, 10,
 'Scale to a width and/or height: contain (fit inside), cover (fill and crop) or stretch.', NULL,
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
   "properties": {
     "width":  {"type": "integer", "minimum": 1, "maximum": 8192, "description": "pixels"},
     "height": {"type": "integer", "minimum": 1, "maximum": 8192, "description": "pixels"},
     "fit":    {"type": "string", "enum": ["contain", "cover", "stretch"], "default": "contain"}},
   "anyOf": [{"required": ["width"]}, {"required": ["height"]}]}'),
('crop', 'Crop', 'local', 1, 20,
 'Cut out a rectangle, in pixels from the top-left corner (after auto-orientation).', NULL,
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
   "properties": {
     "left":   {"type": "integer", "minimum": 0, "maximum": 65535},
     "top":    {"type": "integer", "minimum": 0, "maximum": 65535},
     "width":  {"type": "integer", "minimum": 1, "maximum": 65535},
     "height": {"type": "integer", "minimum": 1, "maximum": 65535}},
   "required": ["left", "top", "width", "height"]}'),
('rotate', 'Rotate', 'local', 1, 30,
 'Rotate clockwise by any angle; expand grows the canvas so nothing is cut off.', NULL,
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
   "properties": {
     "angle":  {"type": "number", "minimum": -360, "maximum": 360, "description": "degrees, clockwise"},
     "expand": {"type": "boolean", "default": true}},
   "required": ["angle"]}'),
('auto_orient', 'Auto-orient', 'local', 1, 40,
 'Apply the camera''s orientation tag to the pixels (every tool does this first).', NULL,
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false, "properties": {}}'),
('grayscale', 'Black & white', 'local', 1, 50, 'Convert to grayscale.', NULL,
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false, "properties": {}}'),
('blur', 'Blur', 'local', 1, 60, 'Gaussian blur.', NULL,
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
   "properties": {"radius": {"type": "number", "minimum": 0.1, "maximum": 50, "default": 2}}}'),
('sharpen', 'Sharpen', 'local', 1, 70, 'Unsharp mask.', NULL,
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
   "properties": {
     "radius":    {"type": "number", "minimum": 0.1, "maximum": 10, "default": 2},
     "percent":   {"type": "integer", "minimum": 1, "maximum": 500, "default": 150},
     "threshold": {"type": "integer", "minimum": 0, "maximum": 255, "default": 3}}}'),
('thumbnail', 'Thumbnail', 'local', 1, 80, 'Shrink to fit a square box, keeping the aspect ratio.', NULL,
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
   "properties": {"size": {"type": "integer", "minimum": 16, "maximum": 2048, "default": 256}}}'),
('convert', 'Convert format', 'local', 1, 90, 'Re-encode as JPEG, PNG or WebP.', NULL,
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
   "properties": {
     "format":  {"type": "string", "enum": ["jpeg", "png", "webp"]},
     "quality": {"type": "integer", "minimum": 1, "maximum": 100, "default": 90}},
   "required": ["format"]}'),
('strip_metadata', 'Remove metadata', 'local', 1, 100,
 'Remove EXIF (location, camera, dates), XMP and comments; keeps the colour profile.', NULL,
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false, "properties": {}}')
ON CONFLICT (id) DO NOTHING;

-- AI tools: ${name} placeholders are filled from enum parameters only (ai_tools.py
-- refuses anything else); an underscore in a value reads as a space.
INSERT INTO tools (id, name, kind, credit_cost, sort_order, description, output_format, ai_options,
                   prompt_template, params_schema) VALUES
('hairstyle', 'New hairstyle', 'ai', 8, 200, 'Try a different hairstyle; face and background stay.', 'jpeg',
 '{"input_fidelity": "high"}',
 'Edit this photo so that the person has a ${style} hairstyle. Keep their face, identity, expression, skin tone, pose, clothing, lighting and the background unchanged. The result must look like a real, unedited photograph.',
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
   "properties": {"style": {"type": "string", "enum": ["short_bob", "long_layers", "pixie_cut", "buzz_cut",
     "curly_afro", "braids", "man_bun", "undercut", "beach_waves", "straight_bangs", "slicked_back"]}},
   "required": ["style"]}'),
('hair_color', 'Hair colour', 'ai', 6, 210, 'Change the hair colour, naturally.', 'jpeg',
 '{"input_fidelity": "high"}',
 'Change the hair colour of the person in this photo to ${color}. Keep the hairstyle, face, identity, skin tone, lighting and background unchanged. The colour must look natural, with realistic highlights and roots.',
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
   "properties": {"color": {"type": "string", "enum": ["jet_black", "dark_brown", "chestnut", "light_brown",
     "honey_blonde", "platinum_blonde", "auburn", "copper_red", "silver_grey", "pastel_pink", "electric_blue"]}},
   "required": ["color"]}'),
('background_remove', 'Remove background', 'ai', 4, 220, 'Cut out the subject on a transparent background.', 'png',
 '{"background": "transparent", "output_format": "png"}',
 'Remove the background of this photo completely. Keep only the main subject, unchanged, with clean and precise edges, on a fully transparent background.',
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false, "properties": {}}'),
('background_replace', 'Replace background', 'ai', 6, 230, 'Put the subject in front of a new background.', 'jpeg',
 '{"input_fidelity": "high"}',
 'Replace the background of this photo with ${background}. Keep the main subject exactly as it is, and match the new background''s lighting and perspective so the edges look natural.',
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
   "properties": {"background": {"type": "string", "enum": ["a_white_studio_backdrop", "a_sunny_beach",
     "a_city_street_at_night", "a_green_forest", "a_soft_blue_gradient", "a_modern_office", "a_snowy_mountain"]}},
   "required": ["background"]}'),
('restore', 'Restore old photo', 'ai', 8, 240, 'Repair scratches, fading and blur in old photos.', 'jpeg',
 '{"input_fidelity": "high"}',
 'Restore this old photograph with a ${strength} touch: repair scratches, tears, stains and fading, and reduce noise and blur. Keep the people''s faces, identity, expressions and the composition faithful to the original; do not add or remove anything.',
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
   "properties": {"strength": {"type": "string", "enum": ["gentle", "balanced", "strong"], "default": "balanced"}}}'),
('style_transfer', 'Art style', 'ai', 6, 250, 'Redraw the photo in an art style.', 'jpeg', '{}',
 'Redraw this photo as ${style} artwork. Keep the composition, the subjects and their poses recognisable.',
 '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false,
   "properties": {"style": {"type": "string", "enum": ["watercolor", "oil_painting", "pencil_sketch", "anime",
     "pop_art", "pixel_art", "vintage_film", "comic_book"]}},
   "required": ["style"]}')
ON CONFLICT (id) DO NOTHING;

-- Tools inserted before the trigger existed (none today) get their first version too.
INSERT INTO tool_versions (tool_id, version, params_schema, prompt_template)
SELECT id, prompt_version, params_schema, prompt_template FROM tools
ON CONFLICT (tool_id, version) DO NOTHING;
