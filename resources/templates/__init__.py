"""Writers' templates (Markdown with a YAML header), read by core.text.templates."""
