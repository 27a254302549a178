"""Inspection metrics with scikit-learn's ROC code: image AUROC, pixel AUROC, AUPRO (per-region
overlap up to 30 % false-positive rate), F1 at the threshold and the best F1 any threshold reaches,
pass/catch rates, per defect type."""

from __future__ import annotations

import numpy as np

MAX_PIXELS_FOR_AUROC = 8_000_000


def roc_auc(y, s):
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if y.size == 0 or y.min() == y.max():
        return None
    return float(roc_auc_score(y, s))


def pixel_auroc(maps: np.ndarray, masks: np.ndarray, seed: int = 0):
    """maps, masks: (N, H, W). Uniform subsample beyond 8 M pixels (unbiased, deterministic)."""
    s, y = maps.reshape(-1), masks.reshape(-1)
    if s.size > MAX_PIXELS_FOR_AUROC:
        idx = np.random.default_rng(seed).choice(s.size, MAX_PIXELS_FOR_AUROC, replace=False)
        s, y = s[idx], y[idx]
    return roc_auc(y.astype(np.uint8), s.astype(np.float32))


def aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3, steps: int = 200):
    """Area under the per-region-overlap curve up to max_fpr, normalised to [0, 1]."""
    from scipy import ndimage

    regions = []
    for m, msk in zip(maps, masks):
        if not msk.any():
            continue
        lab, n = ndimage.label(msk)
        for r in range(1, n + 1):
            regions.append(np.sort(m[lab == r]))
    if not regions:
        return None
    normal = np.sort(maps[~masks.astype(bool)].reshape(-1))
    if normal.size == 0:
        return None
    # Thresholds from the normal-pixel quantiles covering FPR 0..max_fpr.
    fprs = np.linspace(0, max_fpr, steps)
    thrs = np.quantile(normal, 1 - fprs)
    real_fpr = 1 - np.searchsorted(normal, thrs, side="left") / normal.size
    pros = np.array([np.mean([1 - np.searchsorted(r, t, side="left") / r.size for r in regions]) for t in thrs])
    order = np.argsort(real_fpr)
    x, yv = real_fpr[order], pros[order]
    keep = x <= max_fpr
    x, yv = x[keep], yv[keep]
    if x.size < 2:
        return None
    return float(np.trapezoid(yv, x) / max_fpr)


def counts_at_each_threshold(positive, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(each distinct score, highest first; positives at or above it; all items at or above it),
    ties handled as scikit-learn's curves do. Plain numpy on purpose: the app's threshold view
    calls this on the GUI thread, where importing scikit-learn (and so scipy) while a job imports
    torch on the worker thread can fail on a half-initialised torch module."""
    y = np.asarray(positive, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # each distinct score's last place
    return s[last], np.cumsum(y)[last], last + 1


def best_f1(y, s) -> tuple[float | None, float | None]:
    """The highest F1 any threshold reaches on these scores (anomalib's F1Max) and that threshold
    (a score counts as defective at or above it): what calibrating on these labelled images would
    give, so the F1 at the model's own threshold can be read against it."""
    y = np.asarray(y, dtype=bool)
    if y.size == 0 or not y.any():
        return None, None
    thresholds, caught, flagged = counts_at_each_threshold(y, s)
    f1 = 2 * caught / (flagged + y.sum())  # 2 TP / (2 TP + FP + FN)
    best = f1.size - 1 - int(np.argmax(f1[::-1]))  # of equal F1s the lowest threshold, as scikit-learn's curve
    return float(f1[best]), float(thresholds[best])


def image_metrics(scores, labels, types, threshold, maps=None, masks=None, with_aupro=True) -> dict:
    """scores (N,), labels 0 good / 1 defect, types per item ("good" or defect type)."""
    from sklearn.metrics import f1_score

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=int)
    pred = (s >= threshold).astype(int)
    good, bad = y == 0, y == 1
    out = {
        "n_images": int(y.size), "n_good": int(good.sum()), "n_defect": int(bad.sum()),
        "image_auroc": roc_auc(y, s),
        "f1": float(f1_score(y, pred, zero_division=0)) if bad.any() else None,
        "threshold": float(threshold),
        "f1_max": None, "f1_max_threshold": None,
        "pass_rate_good": float((pred[good] == 0).mean()) if good.any() else None,
        "catch_rate_defect": float((pred[bad] == 1).mean()) if bad.any() else None,
        "pixel_auroc": None, "aupro": None,
    }
    if bad.any():
        out["f1_max"], out["f1_max_threshold"] = best_f1(y, s)
    has_masks = masks is not None and maps is not None and masks[bad].any() if bad.any() and masks is not None else False
    if has_masks:
        out["pixel_auroc"] = pixel_auroc(maps, masks)
        if with_aupro:
            out["aupro"] = aupro(maps, masks)
    per = {}
    types = list(types)
    for t in sorted({t for t in types if t != "good"}):
        sel = np.array([tt == t for tt in types])
        sub = sel | good
        entry = {"count": int(sel.sum()), "catch_rate": float((pred[sel] == 1).mean()),
                 "image_auroc": roc_auc(y[sub], s[sub])}
        if has_masks and masks[sel].any():
            entry["pixel_auroc"] = pixel_auroc(maps[sel], masks[sel])
        per[t] = entry
    out["per_defect"] = per
    return out
