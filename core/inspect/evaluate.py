"""Evaluating an image inspector on a labelled data set (MVTec layout test split, or plain folders)."""

from __future__ import annotations

import time

import numpy as np
import torch

from core.errors import AppError
from core.inspect import data as D
from core.inspect.metrics import image_metrics


def eval_items(ds: D.DataSet):
    """MVTec layout: the test split. Plain layout: its good images plus its defect folders."""
    items = list(ds.test) if ds.layout == "mvtec" else list(ds.train) + list(ds.test)
    if not items:
        raise AppError(f"'{ds.root}' has no labelled images to evaluate.",
                       "Use an MVTec-style folder (test/good, test/<defect>) or good/ and defect sub-folders.")
    return items


def load_labelled(insp, items):
    """Read labelled items as the model preprocesses them: (x, items read, masks at the model's
    size, whether any defect has a mask, skipped (path, reason), the images' views for the
    model (None for a one-view model))."""
    size = int(insp.prep["size"])
    arrays, shapes, skipped = D.load_batch([i.path for i in items], insp.prep)
    ok = [(a, i, s) for a, i, s in zip(arrays, items, shapes) if a is not None]
    if not ok:
        raise AppError("None of the images to evaluate could be read.", "Check the data folder.")
    x = torch.from_numpy(np.stack([a for a, _, _ in ok]))
    read = [i for _, i, _ in ok]
    masks = np.stack([D.read_mask(i.mask, (size, size)) for i in read])
    has_any_mask = any(i.mask is not None for i in read if not i.is_good)
    return x, read, masks, has_any_mask, skipped, insp.views_of([s for _, _, s in ok])


def evaluate(insp, data, ctx=None, with_aupro: bool = True, limit: int | None = None, items=None) -> dict:
    """Metrics of `insp` on the labelled images of `data` (or on `items`, some of them)."""
    if items is None:
        items = eval_items(D.scan(data))
    if limit:
        items = items[:limit]
    t0 = time.monotonic()
    x, read, masks, has_any_mask, skipped, views = load_labelled(insp, items)
    t_load = time.monotonic() - t0
    t1 = time.monotonic()
    scores, maps = insp.score_tensor(x, keep_maps=True, views=views)
    t_score = time.monotonic() - t1
    labels = [0 if i.is_good else 1 for i in read]
    types = [i.label for i in read]
    thr = __import__("core.inspect.score", fromlist=["effective_threshold"]).effective_threshold(
        insp.calibration, insp.sensitivity)
    res = image_metrics(scores.numpy(), labels, types, thr, maps.numpy() if has_any_mask else None,
                        masks if has_any_mask else None, with_aupro=with_aupro)
    res.update({"skipped": [{"path": p, "reason": r} for p, r in skipped], "maps": insp.maps_in_use(),
                "score_maps": insp.score_maps(),
                "infer_images_per_s": round(len(read) / max(t_score, 1e-9), 2),
                "load_seconds": round(t_load, 2), "score_seconds": round(t_score, 2)})
    res["_scores"] = scores.numpy()
    res["_items"] = read
    return res
