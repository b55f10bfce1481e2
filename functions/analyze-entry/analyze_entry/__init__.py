"""analyze-entry: journal entries stored with visibility rules and analysed for mood,
emotions, tags and a summary (OpenAI structured outputs, or the offline analyser)."""
