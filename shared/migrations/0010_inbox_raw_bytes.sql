-- The webhook inbox keeps each delivery's body as the exact bytes that were verified
-- (bytea), not as text: a signed event whose JSON carries "\u0000" or an unpaired
-- surrogate is still stored and applied, and an audit or a replay sees what the provider
-- signed. Existing bodies are valid UTF-8 text, so converting them loses nothing.
-- depends: 0009_housekeeping

ALTER TABLE webhook_inbox ALTER COLUMN body TYPE bytea USING convert_to(body, 'UTF8');
