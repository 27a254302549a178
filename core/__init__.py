"""Lienzo engine: project store, jobs, models, text, image and inspection. Never imports Qt."""

from core import openmp_wait as _openmp_wait  # noqa: F401  before anything loads torch

__version__ = "0.1.0"
