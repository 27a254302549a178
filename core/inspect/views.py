"""Views: groups of a data set's images by shape, each with its own statistics of good parts.

Some lines photograph one product from several sides, and each side comes out in its own image
shape: magnetic_tile's good images fall into four clusters of aspect ratio (about 0.4, 0.6-1.1,
1.2-1.7 and 2.2-2.6). Every image is resized to one square, so a position of the square shows a
different part of the product in each view, and statistics per position fitted over all views at
once (the VAE map's mean and sd, the feature Gaussians) describe none of them well. Split by view
they rank magnetic_tile's images much better (all four maps, image / pixel AUROC: the same trained
networks 0.863 / 0.801 -> 0.928 / 0.821; trained afresh 0.918-0.923 / 0.833-0.841; bench/README.md).
The networks themselves are shared by all views.

Views are found in the training images' aspect ratios: sorted on a log scale, the ratios are cut
at the widest gaps of at least MIN_GAP (and GAP_OVER_MEDIAN times the median gap, so a few images
spread over a continuum of shapes are not cut at random), as long as every view keeps MIN_IMAGES.
A set whose images all have one shape (most, and deeppcb) has a single view and scores as before.

Views also pick the donors of the context segmenter's foreign regions (core.inspect.synth): a band
copied from an image of another view is squeezed differently, which is easy to see and teaches
nothing about a surface finished differently (magnetic_tile, context map alone: 0.79-0.81 -> 0.83-0.86
pixel AUROC).
"""

from __future__ import annotations

import math

import numpy as np
import torch

MIN_GAP = math.log(1.05)  # aspect ratios 5 % apart with no image between them: a different view
GAP_OVER_MEDIAN = 10
MIN_IMAGES = 30  # good images a view needs for its own statistics
MAX_VIEWS = 4


def aspect(shape) -> float:
    """Width / height of an (height, width, ...) shape."""
    return float(shape[1]) / max(float(shape[0]), 1.0)


def find_edges(aspects, min_images: int = MIN_IMAGES, max_views: int = MAX_VIEWS) -> list[float]:
    """Aspect ratios that separate the views of these images (ascending; empty: one view)."""
    logs = np.sort(np.log(np.asarray(list(aspects), dtype=np.float64)))
    if logs.size < 2 * min_images:
        return []
    gaps = np.diff(logs)
    wide = max(MIN_GAP, GAP_OVER_MEDIAN * float(np.median(gaps)))
    cuts: list[int] = []  # a cut after index i puts logs[:i + 1] on its left
    for i in np.argsort(-gaps, kind="stable"):
        if gaps[i] < wide or len(cuts) == max_views - 1:
            break
        bounds = sorted(cuts + [int(i)])
        sizes = np.diff([-1] + bounds + [logs.size - 1])
        if sizes.min() >= min_images:
            cuts = bounds
    return [float(math.exp((logs[i] + logs[i + 1]) / 2)) for i in cuts]


def view_of(aspects, edges) -> torch.Tensor:
    """The view (0 .. len(edges)) of each aspect ratio, as a long tensor."""
    ratios = np.asarray(list(aspects), dtype=np.float64)
    return torch.from_numpy(np.searchsorted(np.asarray(edges, dtype=np.float64), ratios, side="right")).long()


def views_of_shapes(shapes, edges) -> torch.Tensor:
    return view_of([aspect(s) for s in shapes], edges)


def describe(edges) -> list[str]:
    """Human-readable ranges of aspect ratio (width / height), one per view."""
    bounds = [None, *edges, None]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if lo is None and hi is None:
            out.append("any shape")
        elif lo is None:
            out.append(f"width/height below {hi:.2f}")
        elif hi is None:
            out.append(f"width/height {lo:.2f} and above")
        else:
            out.append(f"width/height {lo:.2f} to {hi:.2f}")
    return out
