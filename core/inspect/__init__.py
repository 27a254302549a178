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
# the statistics pay a wake-up: scoring ran 2-2.2x slower on 2 idle cores. Spinning long (OpenMP's
# default) is far worse when other programs use the cores (a training step 3.5 s instead of 0.24 s).
# GNU OpenMP, which PyTorch's Linux wheels use, can spin a set number of times and then sleep. How
# long a spin lasts differs between CPUs by about ten times: 300 was as fast as the default on one
# 2-core machine and no faster than sleeping on another (an AMD EPYC), where 3000 matched the default
# and still trained as fast as 300 beside a busy process (bench/README.md, sessions 17 and 18).
# Elsewhere, or where the user chose a policy, sleeping stays the default.
if _sys.platform.startswith("linux") and "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "3000")
else:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
