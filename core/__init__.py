"""Lienzo engine: project store, jobs, models, text, image and inspection. Never imports Qt."""

__version__ = "0.1.0"
