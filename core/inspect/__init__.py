"""The QA inspector: VAE anomaly detection for product images and tabular records.

Modules: data (reading, preprocessing), model (networks), synth (synthetic defects), train (image
training job), feature_stats (Gaussians of features per region), score (maps,
threshold, verdicts), metrics, evaluate, tabular (MLP VAE), store
(safetensors + config.json folders), cli (`lienzo inspect …`). Importing this package is cheap: torch
is imported by the modules that need it.
"""

import os as _os
import sys as _sys

# How OpenMP's idle threads wait. It counts only when set before torch is first imported: the CLI,
# the job entry points, the benchmarks and the tests import this package first. Sleeping at once
# (OMP_WAIT_POLICY=PASSIVE) makes each of the many small parallel regions of scoring and of fitting
# the statistics pay a wake-up: on 2 idle cores, against the short spin below, scoring ran 2.2x
# slower and the work after training 1.3x. Spinning long (OpenMP's default) is far worse when other
# programs use the cores (a training step 3.5 s instead of 0.24 s). GNU OpenMP, which PyTorch's
# Linux wheels use, can spin a few microseconds and then sleep: nearly as fast as spinning on free
# cores, as good as sleeping on busy ones (bench/README.md, seventeenth session). Elsewhere, or
# where the user chose a policy, sleeping stays the default.
if _sys.platform.startswith("linux") and "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "300")
else:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
