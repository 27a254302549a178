"""The text studio's engine: generation, rewriting, templates, summarise/translate, classify, search.

Nothing here imports torch or transformers at import time; models are loaded through
core.models.cache inside jobs.
"""
