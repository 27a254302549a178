"""Local model registry and safe loading (shared by text, image and inspection)."""
