"""Calibrating a trained inspector on images labelled good or defective: the F1-optimal threshold
and, optionally first, which of its anomaly maps to sum (recalibrate).

An inspector sums up to four maps (score.Inspector.map_parts), each centred and scaled on held-out
good images. Which ones help depends on the product: on magnetic tiles the Gaussians of the context
segmenter's features rank images best and the VAE's own map adds false peaks; on circuit boards
the VAE's own map is best and the feature Gaussians are at chance for whole images (bench/README.md).
No rule measured on good images alone tells the cases apart (synthetic defects on held-out good
images are found by every map, so they rank the sums nothing like real defects do), but a few
labelled defects do: chosen on half of each test set and measured on the other half, the choice
beat the sum of all maps on both sets. Every non-empty subset of the maps is scored on the labelled
images by image AUROC plus pixel AUROC (where defects have masks); the best is kept. A subset's
image score leaves out the maps the model leaves out of its score (Inspector.score_maps), as it
will when the subset is chosen; its pixels are those of the whole sum, the heat map.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from core.errors import AppError
from core.inspect import store
from core.inspect.maps import summed_maps
from core.inspect.metrics import pixel_auroc, roc_auc
from core.inspect.score import calibrate

MIN_EACH = 5  # labelled good and defective images a choice needs at least
PIXELS_PER_IMAGE = 4096  # a regular grid of pixels per image for the pixel AUROC (the maps are smooth)


def recalibrate(insp, x: torch.Tensor, labels, masks: np.ndarray | None = None, choose: bool = False,
                check_cancelled=None, views=None) -> dict:
    """The F1-optimal threshold on labelled images (x, labels and masks as choose_maps takes them),
    with `choose` on the maps chosen first, written to the model's folder (insp.folder) and set
    on `insp`. Returns {"threshold", "method", "maps", and with choose "subsets"}."""
    labels = np.asarray(labels, dtype=int)
    if not ((labels == 0).any() and (labels == 1).any()):
        raise AppError(f"Calibration needs both good and defective labelled images; there are "
                       f"{int((labels == 0).sum())} good and {int((labels == 1).sum())} defective.",
                       "Label some images good and some defective (test/good and test/<defect> "
                       "folders, or labels in the data set).")
    out = {}
    if choose:
        choice = choose_maps(insp, x, labels, masks, check_cancelled, views)
        apply_choice(insp, choice["use"])
        out["subsets"] = choice["subsets"]
    if check_cancelled:
        check_cancelled()
    scores, heat = insp.score_tensor(x, keep_maps=choose, views=views)
    if choose:  # the heat map's scale for the maps now summed, from the labelled good images
        insp.fit_heat_to_score(scores[labels == 0], heat[labels == 0])
    scores = scores.numpy()
    cal = calibrate(scores[labels == 0], scores[labels == 1], [1] * int((labels == 1).sum()))
    config = store.read_config(insp.folder)
    config["calibration"] = cal
    if choose:
        for key in ("use", "heat_to_score"):
            config["map"].pop(key, None)
            if insp.config["map"].get(key):
                config["map"][key] = insp.config["map"][key]
    store.write_config(insp.folder, config)
    insp.config["calibration"] = cal
    out.update(threshold=cal["threshold"], method=cal["method"], maps=insp.maps_in_use())
    return out


def choose_maps(insp, x: torch.Tensor, labels, masks: np.ndarray | None = None, check_cancelled=None,
                views=None) -> dict:
    """x: preprocessed labelled images, labels 0 good / 1 defective, masks (N, S, S) or None,
    views: the images' views (Inspector.views_of; None for a one-view model).
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
    subsets = [s for r in range(1, len(names) + 1) for s in itertools.combinations(names, r)]
    scored = {s: summed_maps({**insp.config, "map": {**insp.config["map"], "use": list(s)}})[1] for s in subsets}
    size = x.shape[-1]
    step = max(1, int(round(size / PIXELS_PER_IMAGE ** 0.5)))
    image_scores = {s: [] for s in subsets}
    pixels = {s: [] for s in subsets}
    with torch.inference_mode():
        for i in range(0, x.shape[0], insp.batch):
            if check_cancelled:
                check_cancelled()
            scaled = insp.scaled_parts(x[i:i + insp.batch].to(insp.device), None,
                                       None if views is None else views[i:i + insp.batch])
            for s in subsets:
                total = sum(scaled[k] for k in s)
                score_map = total if len(scored[s]) == len(s) else sum(scaled[k] for k in scored[s])
                image_scores[s].append(score_map.flatten(1).amax(1).cpu())
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
    chosen = [n for n in names if n in use]
    if chosen == names:  # all of them: the same as no choice
        insp.config["map"].pop("use", None)
    else:
        insp.config["map"]["use"] = chosen
