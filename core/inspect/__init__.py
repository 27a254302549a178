"""The QA inspector: VAE anomaly detection for product images and tabular records.

Modules: data (reading, preprocessing), model (networks), synth (synthetic defects), train (image
training job), feature_stats (Gaussians of features per region), score (maps,
threshold, verdicts), metrics, evaluate, tabular (MLP VAE), store
(safetensors + config.json folders), cli (`lienzo inspect …`). Importing this package is cheap: torch
is imported by the modules that need it.
"""
