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
images by image AUROC plus pixel AUROC (where defects have masks). A subset's image score leaves out
the maps the model leaves out of its score (Inspector.score_maps), as it will when the subset is
chosen; its pixels are those of the whole sum, the heat map.

A few labelled images can also mislead: with 5 of each, the best-scoring subset ranked the other
images worse than all the maps in up to 15 % of random draws on the benchmark sets' models, and
with image labels alone at chance (0.49-0.61 image AUROC) in the worst ones.
So a subset other than all the maps is only kept where it beats all the maps in at least
CONFIDENCE of bootstrap resamples of the labelled images; among those, the best score wins
(bench/README.md, twenty-fourth section).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from core.errors import AppError
from core.inspect import store
from core.inspect.maps import heat_is_score, heat_weights, summed_maps
from core.inspect.metrics import pixel_auroc, roc_auc
from core.inspect.score import calibrate

MIN_EACH = 5  # labelled good and defective images a choice needs at least
PIXELS_PER_IMAGE = 4096  # a regular grid of pixels per image for the pixel AUROC (the maps are smooth)
CONFIDENCE = 0.9  # share of bootstrap resamples in which a subset must beat all the maps
RESAMPLES = 100
RESAMPLED_PIXELS = 20_000  # pixels per resample's pixel AUROC, spread over the images (4 s for 600 images)


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
        out["higher_not_kept"] = higher_not_kept(choice["subsets"])
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
                       "Train it as a general or textured part type (a patterned one has the VAE's map "
                       "alone) to choose among them.")
    subsets = [s for r in range(1, len(names) + 1) for s in itertools.combinations(names, r)]
    configs = {s: {**insp.config, "map": {**insp.config["map"], "use": list(s)}} for s in subsets}
    scored = {s: summed_maps(configs[s])[1] for s in subsets}
    weights = {s: heat_weights(insp.config, s) for s in subsets}
    score_is_heat = {s: heat_is_score(configs[s]) for s in subsets}
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
                total = sum(scaled[k] * weights[s][k] for k in s)
                score_map = total if score_is_heat[s] else sum(scaled[k] for k in scored[s])
                image_scores[s].append(score_map.flatten(1).amax(1).cpu())
                if masks is not None:
                    pixels[s].append(total[:, ::step, ::step].cpu().half())
    with_pixels = masks is not None and bool(masks[labels == 1].any())
    grid_masks = masks[:, ::step, ::step] if with_pixels else None
    images = np.stack([torch.cat(image_scores[s]).numpy() for s in subsets])
    grids = {s: torch.cat(pixels[s]) for s in subsets} if with_pixels else None
    beats = _share_beating_all(labels, images, [grids[s] for s in subsets] if with_pixels else None, grid_masks,
                               check_cancelled)
    rows = []
    for i, s in enumerate(subsets):
        image = roc_auc(labels, images[i])
        pixel = pixel_auroc(grids[s].float().numpy(), grid_masks) if with_pixels else None
        rows.append({"maps": list(s), "image_auroc": image, "pixel_auroc": pixel,
                     "score": (image or 0.0) + (pixel or 0.0), "beats_all_maps": float(beats[i])})
    # All the maps first among the subsets that are not surely better; ties go to more maps: a sum
    # depends less on any one map's quirks.
    everything = len(names)
    rows.sort(key=lambda r: (len(r["maps"]) == everything or r["beats_all_maps"] >= CONFIDENCE,
                             round(r["score"], 4), len(r["maps"])), reverse=True)
    return {"use": rows[0]["maps"], "subsets": rows, "pixels": with_pixels,
            "n_good": good, "n_defect": bad}


def higher_not_kept(rows) -> dict | None:
    """The subset that scored higher than the one kept on the labelled images but did not beat all
    the maps in enough resamples to be kept, with the share it needed (rows as choose_maps returns
    them); None when the kept subset scored best. Said in words by maps.unsure_choice_note."""
    if not rows or rows[0]["score"] >= max(r["score"] for r in rows) - 1e-4:
        return None
    best = max(rows, key=lambda r: r["score"])
    return {"maps": best["maps"], "beats_all_maps": best["beats_all_maps"], "needs": CONFIDENCE}


def _ranks_auroc(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row of scores (..., n) for the 0/1 `truth` (..., n), ties counted half."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=-1)
    pos = truth.sum(-1)
    neg = truth.shape[-1] - pos
    return ((ranks * truth).sum(-1) - pos * (pos + 1) / 2) / np.maximum(pos * neg, 1)


def _share_beating_all(labels, images, grids=None, grid_masks=None, check_cancelled=None) -> np.ndarray:
    """For each subset (rows of images (subsets, n): image scores; grids: per subset its summed map
    on a grid (n, h, w), with grid_masks (n, h, w)), the share of stratified bootstrap resamples of
    the labelled images in which its image + pixel AUROC beats the last subset's (all the maps).
    Seeded: the same images give the same choice."""
    rng = np.random.default_rng(0)
    good, bad = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    pixels = None
    if grids is not None:  # a spread-out subset of each image's grid, to keep resamples cheap
        per_image = grid_masks[0].size
        every = max(1, int(np.ceil(labels.size * per_image / RESAMPLED_PIXELS)))
        pixels = np.stack([g.reshape(labels.size, -1)[:, ::every].float().numpy() for g in grids])
        pixel_truth = (grid_masks.reshape(labels.size, -1)[:, ::every] > 0).astype(np.float64)
    wins = np.zeros(images.shape[0])
    for _ in range(RESAMPLES):
        if check_cancelled:
            check_cancelled()
        pick = np.concatenate([rng.choice(good, good.size), rng.choice(bad, bad.size)])
        score = _ranks_auroc(labels[pick][None].astype(np.float64), images[:, pick])
        if pixels is not None:
            truth = pixel_truth[pick].ravel()
            if 0 < truth.sum() < truth.size:
                score = score + _ranks_auroc(truth[None], pixels[:, pick].reshape(images.shape[0], -1))
        wins += score > score[-1] + 1e-9
    return wins / RESAMPLES


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
