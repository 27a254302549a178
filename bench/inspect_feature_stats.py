"""The feature-statistics map alone, at other grids and with every channel, beside a model's own map.

Post hoc, on a model folder made by `lienzo inspect train`: an encoder's stage outputs (at 1/4 of
the input size, concatenated) of the good training images are modelled by one Gaussian per
region of a cells x cells grid (PaDiM's idea, with an encoder the inspector trained instead of a
pretrained network: the context segmenter's, or with --source vae the VAE's); a test position's
anomaly is the Mahalanobis distance of its features. Prints image and pixel AUROC of the model's
whole map (which holds 100-channel versions of both: core/inspect/feature_stats.py) and of
the feature map alone for each grid with all channels, and what those Gaussians would weigh.

    .venv/bin/python bench/inspect_feature_stats.py MODEL DATA [--cells 8 16 32] [--source vae]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import core.inspect  # noqa: E402,F401  (first: importing core sets how OpenMP threads wait, before torch loads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def main(argv=None) -> int:
    from core.inspect import data as D
    from core.inspect import model as M
    from core.inspect.feature_stats import FeatureGaussians
    from core.inspect.metrics import roc_auc, pixel_auroc
    from core.inspect.score import Inspector

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--cells", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--source", choices=["context", "vae"], default="context",
                    help="whose features: the context segmenter's (where the model has one) or the VAE's")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    insp = Inspector.load(args.model, "cpu")
    if not hasattr(insp.net, "encoder") or insp.net.arch.get("type") != "spatial_vae":
        print("this needs an inspector model (spatial VAE)", file=sys.stderr)
        return 2
    ds = D.scan(args.data)
    size = int(insp.prep["size"])

    def load(items):
        arrays, shapes, _ = D.load_batch([i.path for i in items], insp.prep)
        keep = [(a, i, s) for a, i, s in zip(arrays, items, shapes) if a is not None]
        return (torch.from_numpy(np.stack([a for a, _, _ in keep])), [i for _, i, _ in keep],
                insp.views_of([s for _, _, s in keep]))

    x_good, _, _ = load(ds.train)
    x_test, items, views_test = load(ds.test)
    labels = np.array([0 if i.is_good else 1 for i in items])
    masks = np.stack([D.read_mask(i.mask, (size, size)) for i in items])
    has_masks = any(i.mask is not None for i in items)

    def report(name, maps):
        maps = maps.numpy()
        scores = maps.reshape(len(maps), -1).max(1)
        pix = pixel_auroc(maps, masks) if has_masks else None
        print(f"{name:34s} image AUROC {roc_auc(labels, scores):.3f}   pixel AUROC "
              + ("  n/a" if pix is None else f"{pix:.3f}"), flush=True)

    report("the model's whole map", insp.score_tensor(x_test, keep_maps=True, views=views_test)[1])
    net = insp.context if args.source == "context" and insp.context is not None else insp.net
    batches = lambda x: torch.cat([net.stage_features(x[i:i + 32]) for i in range(0, len(x), 32)])  # noqa: E731
    t0 = time.monotonic()
    f_good, f_test = batches(x_good), batches(x_test)
    print(f"features: {f_good.shape[1]} per position on a {f_good.shape[2]}x{f_good.shape[3]} grid "
          f"({time.monotonic() - t0:.1f} s for {len(x_good) + len(x_test)} images)")
    for cells in args.cells:
        cells = min(cells, f_good.shape[2])
        gauss = FeatureGaussians.fit([f_good], torch.arange(f_good.shape[1]), cells)
        d = gauss.distance(f_test)
        maps = M.blur(F.interpolate(d[:, None], size=(size, size), mode="bilinear", align_corners=False), 2.0)[:, 0]
        megabytes = (gauss.mean.numel() + gauss.precision.numel()) * 4 / 2**20
        report(f"feature statistics, {cells}x{cells} cells", maps)
        print(f"{'':34s} ({megabytes:.0f} MB of Gaussians)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
