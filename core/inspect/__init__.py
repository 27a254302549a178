"""The QA inspector: VAE anomaly detection for product images and tabular records.

Modules: data (reading, preprocessing), model (networks), synth (synthetic defects), train (image
training job), feature_stats (Gaussians of features per region), score (maps,
threshold, verdicts), metrics, evaluate, tabular (MLP VAE), store
(safetensors + config.json folders), cli (`lienzo inspect …`). Importing this package is cheap: torch
is imported by the modules that need it.
"""

import os as _os

# Waiting OpenMP threads sleep instead of spinning. On a machine whose cores are shared with other
# programs, spinning threads were measured 15x slower per training step (3.5 s vs 0.24 s); on a
# quiet machine the difference is negligible. Only effective when set before torch is first
# imported, which is the case for the CLI and the job entry points of this package.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
