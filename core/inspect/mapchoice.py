"""Choosing which of a model's anomaly maps to sum, from images labelled good or defective.

An inspector sums up to four maps (score.Inspector.map_parts), each centred and scaled on held-out
good images. Which ones help depends on the product: on magnetic tiles the Gaussians of the context
segmenter's features rank images best and the VAE's own map adds false peaks; on circuit boards
the VAE's own map is best and the feature Gaussians are at chance for whole images (bench/README.md).
No rule measured on good images alone tells the cases apart (synthetic defects on held-out good
images are found by every map, so they rank the sums nothing like real defects do), but a few
labelled defects do: chosen on half of each test set and measured on the other half, the choice
beat the sum of all maps on both sets. Every non-empty subset of the maps is scored on the labelled
images by image AUROC plus pixel AUROC (where defects have masks); the best is kept.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from core.errors import AppError
from core.inspect.metrics import pixel_auroc, roc_auc
from core.inspect.score import map_combination

MIN_EACH = 5  # labelled good and defective images a choice needs at least
PIXELS_PER_IMAGE = 4096  # a regular grid of pixels per image for the pixel AUROC (the maps are smooth)


def choose_maps(insp, x: torch.Tensor, labels, masks: np.ndarray | None = None) -> dict:
    """x: preprocessed labelled images, labels 0 good / 1 defective, masks (N, S, S) or None.
    Returns {"use": [map names], "subsets": [{"maps", "image_auroc", "pixel_auroc", "score"}, ...]
    best first}; the model is not changed (see apply_choice)."""
    labels = np.asarray(labels, dtype=int)
    good, bad = int((labels == 0).sum()), int((labels == 1).sum())
    if good < MIN_EACH or bad < MIN_EACH:
        raise AppError(f"Choosing the maps needs at least {MIN_EACH} good and {MIN_EACH} defective labelled "
                       f"images; there are {good} good and {bad} defective.",
                       "Label more images, or calibrate the threshold without choosing maps.")
    names = insp.available_maps()
    if len(names) < 2:
        raise AppError("This model has a single anomaly map; there is nothing to choose.",
                       "Train it with the feature and context maps (the default) to choose among them.")
    combine = map_combination(insp.config)
    subsets = [s for r in range(1, len(names) + 1) for s in itertools.combinations(names, r)]
    size = x.shape[-1]
    step = max(1, int(round(size / PIXELS_PER_IMAGE ** 0.5)))
    image_scores = {s: [] for s in subsets}
    pixels = {s: [] for s in subsets}
    with torch.inference_mode():
        for i in range(0, x.shape[0], insp.batch):
            parts = insp.map_parts(x[i:i + insp.batch].to(insp.device))
            scaled = {k: (m.float() - combine[k][0]) / combine[k][1] for k, m in parts.items()}
            for s in subsets:
                total = sum(scaled[k] for k in s)
                image_scores[s].append(total.flatten(1).amax(1).cpu())
                if masks is not None:
                    pixels[s].append(total[:, ::step, ::step].cpu().half())
    with_pixels = masks is not None and bool(masks[labels == 1].any())
    grid_masks = masks[:, ::step, ::step] if with_pixels else None
    rows = []
    for s in subsets:
        image = roc_auc(labels, torch.cat(image_scores[s]).numpy())
        pixel = pixel_auroc(torch.cat(pixels[s]).float().numpy(), grid_masks) if with_pixels else None
        rows.append({"maps": list(s), "image_auroc": image, "pixel_auroc": pixel,
                     "score": (image or 0.0) + (pixel or 0.0)})
    # Ties go to more maps: a sum depends less on any one map's quirks.
    rows.sort(key=lambda r: (round(r["score"], 4), len(r["maps"])), reverse=True)
    return {"use": rows[0]["maps"], "subsets": rows, "pixels": with_pixels,
            "n_good": good, "n_defect": bad}


def apply_choice(insp, use) -> None:
    """Sum only the maps `use` from now on (the calibration must be redone on the new map)."""
    names = insp.available_maps()
    if not use:
        raise AppError("No anomaly map was chosen.", f"Choose one or more of {names}.")
    if not set(use) <= set(names):
        raise AppError(f"Unknown anomaly maps {sorted(set(use) - set(names))}.", f"This model has {names}.")
    insp.config["map"]["use"] = [n for n in names if n in use]
