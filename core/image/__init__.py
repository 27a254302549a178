"""Image studio engine: local diffusion pipelines (Stable Diffusion family) and PNG metadata.

Nothing here imports torch or diffusers at import time: the heavy modules are imported inside the
functions that need them, so the CLI and the GUI start fast.
"""
