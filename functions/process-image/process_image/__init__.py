"""process-image: uploads, the tools catalog, paid image edits (Pillow locally, OpenAI
image edits for AI tools), cached per request so nobody pays twice."""
