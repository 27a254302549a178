"""How OpenMP's idle threads wait, chosen once for the whole process before torch loads.

GNU OpenMP reads its settings when the library loads, so this must run before the first `import
torch`. `core/__init__.py` imports it, and every entry point (the `lienzo` launcher, the GUI, the
CLI, the job modules, the benchmarks, the tests) imports `core` before torch, so text, image and
inspection work all get it, whichever job loads torch first.

Sleeping at once (OMP_WAIT_POLICY=PASSIVE) makes each of the many small parallel regions of scoring
and of fitting statistics pay a wake-up: the inspector scored 2-2.2x slower on 2 idle cores.
Spinning long (OpenMP's default) is far worse when other programs use the cores, the GUI included
(an inspector training step 3.5 s instead of 0.24 s). GNU OpenMP, which PyTorch's Linux wheels use,
can spin a set number of times and then sleep. How long a spin lasts differs between CPUs by about
ten times: 300 was as fast as the default on one 2-core machine and no faster than sleeping on
another (an AMD EPYC), where 3000 matched the default and still trained as fast as 300 beside a busy
process (bench/README.md, sessions 17, 18 and 20). Elsewhere, or where the user chose a policy,
sleeping stays the default.
"""

import os
import sys

if sys.platform.startswith("linux") and "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "3000")
else:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
