"""Scoring with a trained inspector: anomaly map per pixel, image score, calibrated threshold,
normalised score (threshold -> 0.5) and PASS/FAIL. Everything it needs comes from config.json, so
a reloaded model scores exactly as it did right after training.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core import device as devices
from core.errors import AppError
from core.inspect import data as D
from core.inspect import model as M
from core.inspect import store
from core.inspect import views as V
from core.inspect.maps import heat_is_score, heat_weights, summed_maps


GOOD_CONFIDENCE = 0.99865  # one-sided, as mean + 3 sd of a normal distribution


def _prediction_bound_multiple(n: int) -> float:
    """k such that mean + k sd of n good scores bounds one more good part's score at GOOD_CONFIDENCE
    (Student's t prediction interval)."""
    from scipy.stats import t as student_t

    return float(student_t.ppf(GOOD_CONFIDENCE, n - 1) * math.sqrt(1 + 1 / n))


def far_above_the_rest(good: np.ndarray) -> np.ndarray:
    """Indices of held-out good scores that lie beyond the prediction bound of all the scores below
    them (a generalised ESD test from the top), at most 1 % of them and only from 20 images on. One
    odd good circuit board scoring 13.3 where the other 99 stayed under 2.5 set the threshold at 5.6,
    above all but 0.4 % of the defective boards (bench/README.md, twenty-third session); at most 1 %
    left out cannot move the pass rate of good parts by much more than that."""
    if good.size < 20:
        return np.zeros(0, dtype=int)
    order = np.argsort(good)[::-1]
    ranked = good[order]
    count = 0
    for i in range(max(1, good.size // 100)):
        rest = ranked[i + 1:]
        if ranked[i] > rest.mean() + _prediction_bound_multiple(rest.size) * rest.std(ddof=1):
            count = i + 1  # as in the ESD test, an outlier below counts those above it too
    return np.sort(order[:count])


def calibrate(good_scores, defect_scores=(), defect_labels=()) -> dict:
    """Threshold from held-out good scores, or the F1-optimal one when labelled images (good and
    defective) are available. From good scores alone: the upper prediction bound for one more good
    part's score at the confidence of mean + 3 sd (99.87 %, Student's t). With many held-out images
    that is about mean + 3.1 sd; with few it widens (3 images: 22 sd), because a few images can
    agree by chance far more than good parts do: the old mean + 3 sd failed most good parts of a
    small set whose three held-out scores happened to lie close together. Scores far above all the
    others (far_above_the_rest) are left out of the bound and listed under "left_out" (indices)."""
    good = np.asarray(good_scores, dtype=np.float64)
    left_out = far_above_the_rest(good)
    kept = np.delete(good, left_out)
    mean = float(kept.mean()) if kept.size else 0.0
    sd = float(kept.std(ddof=1)) if kept.size > 1 else abs(mean) * 0.1
    # A floor on the spread, for held-out scores that agree exactly (or a single one).
    sd = max(sd, 1e-6, abs(mean) * 0.05)
    k = _prediction_bound_multiple(kept.size) if kept.size > 1 else 3.0
    labels = np.asarray(list(defect_labels), dtype=int)
    method = "good_holdout"
    thr = mean + k * sd
    if labels.size and labels.min() != labels.max() or (labels.size and labels.max() == 1 and good.size):
        from core.inspect.metrics import best_f1

        scores = np.concatenate([good, np.asarray(defect_scores, dtype=np.float64)])
        y = np.concatenate([np.zeros(good.size, int), labels])
        if y.min() != y.max():
            thr, method, left_out = best_f1(y, scores)[1] - 1e-9, "f1_optimal", left_out[:0]
    return {"threshold": float(thr), "scale": float(sd), "good_mean": mean, "good_sd": float(sd),
            "sd_multiple": k, "method": method, "n_good": int(good.size), "n_labelled": int(labels.size),
            "left_out": [int(i) for i in left_out], "left_out_scores": [float(good[i]) for i in left_out]}


def normalised(scores, calibration: dict, sensitivity: float = 0.5):
    """Map raw scores so the (sensitivity-moved) threshold is 0.5. Higher sensitivity -> more FAIL."""
    s = np.asarray(scores, dtype=np.float64)
    thr = effective_threshold(calibration, sensitivity)
    z = (s - thr) / max(calibration["scale"], 1e-12)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def effective_threshold(calibration: dict, sensitivity: float = 0.5) -> float:
    if not 0.0 <= sensitivity <= 1.0:
        raise AppError(f"Sensitivity {sensitivity} is outside 0..1.", "Use 0.5 (default), higher to catch more.")
    # 0.5 keeps the calibrated threshold; each 0.1 moves it by 0.6 good-score standard deviations.
    return float(calibration["threshold"] - (sensitivity - 0.5) * 6.0 * calibration["scale"])


MAPS_IN_FLIGHT = 256 * 2**20  # bytes of maps kept on the device before they are copied to the host
COMBINE_TAIL = 99.9  # percentile of a map on held-out good images that the combination scales to 1
FIT_GROUP = 32  # images whose features are summed into the feature Gaussians at once


def map_combination(config: dict) -> dict | None:
    """{map name: [offset, scale] on held-out good images}: the median and the distance from it to
    the 99.9th percentile (models from before 2026-11-27 hold the interquartile range instead, and
    models from before the context segmenter keep theirs with the feature statistics). A model
    with several views (core.inspect.views) holds one [offset, scale] per view."""
    return config["map"].get("combine") or config["map"].get("features", {}).get("combine")


def border_distance(height: int, width: int, depth: int) -> torch.Tensor:
    """Each position's distance in pixels to the nearest image border, capped at depth."""
    rows = torch.arange(height)[:, None]
    cols = torch.arange(width)[None, :]
    return torch.minimum(torch.minimum(rows, height - 1 - rows), torch.minimum(cols, width - 1 - cols)).clamp(max=depth)


def border_tail_factors(maps: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor, depth: int) -> torch.Tensor:
    """(H, W) factors for the per-position sd so that the normalised map's 99.9th percentile over
    good images (maps: N, H, W) is the same in each ring of positions at one distance from the border
    (up to depth pixels; those further in form one ring). Within `depth` of the border the networks'
    convolutions see padding, and the map's tail there is longer than a per-position sd says: on
    circuit boards half the good images' maxima lay in the outer 8 of 256 pixels (a sixteenth of the
    area), and with 128 images this lifted the own map's image AUROC 0.858 -> 0.876 and 0.941 -> 0.949
    (bench/README.md, twenty-sixth session)."""
    ring = border_distance(maps.shape[-2], maps.shape[-1], depth).to(maps.device)
    z = ((maps - mean) / sd).float()
    tails = torch.ones(depth + 1, device=maps.device)
    for k in range(depth + 1):
        values = z[:, ring == k].flatten()
        if values.numel():
            step = max(1, values.numel() // 4_000_000)  # torch.quantile's input limit, with room
            tails[k] = torch.quantile(values[::step], COMBINE_TAIL / 100)
    inner = tails[depth] if tails[depth] > 0 else tails.new_tensor(1.0)
    return (tails / inner).clamp(min=0.5, max=4.0)[ring]


def _view_prefix(prefix: str, view: int) -> str:
    """Tensor names of a view's feature Gaussians: view 0 keeps the names from before views."""
    return prefix if view == 0 else f"{prefix}view{view}."


def _per_view(gaussians) -> list | None:
    return None if gaussians is None else (list(gaussians) if isinstance(gaussians, (list, tuple)) else [gaussians])


def inference_batch(size: int, device) -> int:
    """Images per forward pass when scoring. On the CPU small batches are much faster (measured on
    2 cores: 77 vs 51 images/s at 128 px with 8 vs 16 images; 19 vs 10 at 256 px with 2 vs 16):
    big activations fall out of the caches and are fresh, page-faulting allocations every time.
    A GPU wants many images at once."""
    pixels = 2**20 if getattr(device, "type", str(device)) == "cuda" else 2**17
    return max(1, pixels // (int(size) * int(size)))


class Inspector:
    """A trained image model ready to score. Build with Inspector.load(folder) or from training."""

    def __init__(self, net, config: dict, device=None, stats: dict | None = None, features=None,
                 context=None, context_features=None):
        self.device = device or torch.device("cpu")
        # Scoring runs copies with the batch norms folded in; the networks as given are saved.
        self._nets_to_save = (net, context)
        self.net = devices.conv_layout(M.for_inference(net), self.device)
        self.config = config
        self.prep = config["preprocess"]
        self.batch = inference_batch(self.prep["size"], self.device)
        # Per-position statistics of the map over good images, (views, S, S) each (None until fitted).
        self.stats = ({k: (v if v.dim() == 3 else v[None]).to(self.device) for k, v in stats.items()}
                      if stats else None)
        # Gaussians of the encoder's features per region (core.inspect.feature_stats), one per
        # view, or None.
        self.features = [g.to(self.device) for g in _per_view(features)] if features is not None else None
        # The whole-image segmenter of foreign regions (model.ContextSegmenter), or None.
        self.context = (devices.conv_layout(M.for_inference(context.to(self.device)), self.device)
                        if context is not None else None)
        # Gaussians of the context segmenter's encoder features per region, one per view, or None.
        self.context_features = ([g.to(self.device) for g in _per_view(context_features)]
                                 if context_features is not None else None)
        self._splits = {}  # Gaussians' id -> (the Gaussians, their channels split by stage): feature_channels()

    @classmethod
    def load(cls, folder, device: str = "auto") -> "Inspector":
        config, tensors = store.load_model(folder)
        if config.get("task") != "image":
            raise AppError(f"'{folder}' is a {config.get('task')} model, not an image inspector.",
                           "Use 'lienzo inspect eval-table' for tabular models.")
        dev = devices.choose_device(device)
        net = M.build(config["arch"])
        stats = {k[6:]: v for k, v in tensors.items() if k.startswith("stats.")}
        features = context = context_features = None
        try:
            if config["map"].get("features"):
                features = cls._load_gaussians(tensors, config["map"]["features"], "features.")
            if config["map"].get("context_features"):
                context_features = cls._load_gaussians(tensors, config["map"]["context_features"],
                                                       "context_features.")
            if config.get("context"):
                context = M.ContextSegmenter(config["context"]["arch"])
                context.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("context.")})
            parts = ({"own"} | ({"features"} if features is not None else set()) | ({"context"} if context else set())
                     | ({"context_features"} if context_features is not None else set()))
            if len(parts) > 1 and not parts <= set(map_combination(config) or {}):
                raise KeyError("combine")
            if context_features is not None and context is None:
                raise KeyError("context")
            if not set(config["map"].get("use") or ()) <= parts:
                raise KeyError("use")
            if len(config["map"].get("heat_to_score") or (0, 0)) != 2:
                raise KeyError("heat_to_score")
            weights = config["map"].get("heat_weights") or {}
            if not isinstance(weights, dict) or not all(
                    k in parts and isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0
                    for k, w in weights.items()):
                raise KeyError("heat_weights")
            for flag in ("context_flips", "context_logits"):
                if not isinstance(config["map"].get(flag, False), bool):
                    raise KeyError(flag)
            left_out = config["map"].get("score_leaves_out") or []
            if not isinstance(left_out, list) or not set(left_out) <= parts:
                raise KeyError("score_leaves_out")
            tensors = {k: v for k, v in tensors.items()
                       if not k.startswith(("stats.", "features.", "context.", "context_features."))}
            net.load_state_dict(tensors)
        except (RuntimeError, KeyError) as exc:
            raise AppError(f"The weights in '{folder}' do not fit the architecture in config.json.",
                           "The folder is inconsistent; retrain or copy it again.") from exc
        insp = cls(net.to(dev), config, dev, stats or None, features, context, context_features)
        insp.folder = Path(folder)
        return insp

    @staticmethod
    def _load_gaussians(tensors: dict, entry: dict, prefix: str) -> list:
        """One FeatureGaussians per view: view 0 under `prefix`, view v's mean and precision under
        prefix + "view{v}." (all views share view 0's channels)."""
        from core.inspect.feature_stats import FeatureGaussians

        cells = entry["cells"] if isinstance(entry["cells"], list) else [entry["cells"]]
        channels = tensors[prefix + "channels"]
        return [FeatureGaussians.from_tensors(tensors, c, _view_prefix(prefix, v), channels)
                for v, c in enumerate(cells)]

    # -- views -----------------------------------------------------------------------------------
    @property
    def view_edges(self) -> list[float]:
        return list(self.config.get("views", {}).get("edges") or [])

    @property
    def n_views(self) -> int:
        return len(self.view_edges) + 1

    def views_of(self, shapes) -> torch.Tensor | None:
        """The view of images with these original (height, width) shapes; None for a one-view model."""
        return V.views_of_shapes(shapes, self.view_edges) if self.n_views > 1 else None

    def _views(self, n: int, views) -> torch.Tensor:
        if views is None:
            if self.n_views > 1:
                raise ValueError("this model has several views: pass the views of the images (views_of)")
            return torch.zeros(n, dtype=torch.long)
        return torch.as_tensor(views, dtype=torch.long).cpu()

    @property
    def calibration(self) -> dict:
        return self.config["calibration"]

    @property
    def sensitivity(self) -> float:
        return float(self.config.get("sensitivity", 0.5))

    # -- the maps --------------------------------------------------------------------------------
    def maps_in_use(self) -> list[str]:
        """The maps summed into the anomaly map: all the model has, unless labelled images chose
        fewer (core.inspect.mapchoice)."""
        return list(self.config["map"].get("use") or self.available_maps())

    def available_maps(self) -> list[str]:
        return [name for name, there in (("own", True), ("features", self.features is not None),
                                         ("context", self.context is not None),
                                         ("context_features", self.context_features is not None)) if there]

    def score_maps(self) -> list[str]:
        """The maps whose sum gives the image score: those in use less the ones the model leaves out
        of the score (map.score_leaves_out), unless nothing else is left. The context segmenter's
        map is left out by default: it localises large faint regions (it is in the heat map), but
        it ranks whole parts last or next to last of the four maps on both benchmark sets (image
        AUROC 0.50-0.58 on circuit boards, 0.62-0.69 on magnetic tiles), and its false peaks on good
        parts decided the worst runs' scores (deeppcb 0.797 with it, 0.897 without; over eight
        board runs mean 0.897 -> 0.911, worst 0.797 -> 0.869; bench/README.md)."""
        return summed_maps(self.config)[1]

    def _maps(self, x: torch.Tensor, views=None, heat: bool = True):
        """(N, C, S, S) preprocessed -> (heat map, map the image score is the maximum of), both
        (N, S, S) float32; one tensor when the score sums the same maps as the heat map. heat=False:
        (None, the score's map) where the heat map sums more maps than the score, which are then
        not computed."""
        use = self.config["map"].get("use")
        if not use and len(self.available_maps()) == 1:
            own = self.map_parts(x, use, views)["own"]
            return own, own
        scored = self.score_maps()
        if not heat and not heat_is_score(self.config):
            return None, sum(self.scaled_parts(x, scored, views).values())
        parts = self.scaled_parts(x, use, views)
        weights = heat_weights(self.config, parts)
        heat = sum(m * weights[k] for k, m in parts.items())
        if heat_is_score(self.config):
            return heat, heat
        # The heat map on the score's scale, so that the threshold reads the same on both.
        a, b = self.config["map"].get("heat_to_score") or (1.0, 0.0)
        return heat * a + b, sum(parts[k] for k in scored)

    def fit_heat_to_score(self, scores: torch.Tensor, heat: torch.Tensor) -> None:
        """Where the image score sums fewer maps than the heat map: the linear map that gives the
        heat maps' maxima on good images (`heat`, as _maps returns them, with their `scores`) the
        mean and spread of the scores themselves. The threshold, a multiple of the good scores'
        spread above their mean, then marks as unusual a level of the heat map."""
        a0, b0 = self.config["map"].pop("heat_to_score", None) or (1.0, 0.0)  # `heat` is on it
        if heat_is_score(self.config):
            return
        peaks, s = heat.flatten(1).amax(1).double(), scores.double()
        a = float(s.std() / peaks.std()) if s.numel() > 1 and float(peaks.std()) > 1e-9 else 1.0
        b = float(s.mean() - a * peaks.mean())
        self.config["map"]["heat_to_score"] = [a * a0, a * b0 + b]

    def scaled_parts(self, x: torch.Tensor, names=None, views=None) -> dict:
        """map_parts, each centred on its median on held-out good images (of the image's view) and
        scaled so that their 99.9th percentile is 1: the terms of the anomaly map's sum (see
        fit_combination)."""
        combine = map_combination(self.config)
        vs = self._views(x.shape[0], views)
        out = {}
        for k, m in self.map_parts(x, names, vs).items():
            entry = combine[k]
            if isinstance(entry[0], list):  # one [offset, scale] per view
                table = torch.tensor(entry, dtype=torch.float32, device=m.device)[vs.to(m.device)]
                out[k] = (m.float() - table[:, 0, None, None]) / table[:, 1, None, None]
            else:
                out[k] = (m.float() - entry[0]) / entry[1]
        return out

    def map_parts(self, x: torch.Tensor, names=None, views=None) -> dict:
        """The maps that make up the anomaly map: "own" (the VAE's, normalised per position),
        "features" (feature_stats of the VAE encoder), "context" (the context segmenter) and
        "context_features" (feature_stats of its encoder), those the model has; with `names`
        only those (a network none of them needs is not run). views: each image's view (see
        views_of), needed when the model has several."""
        mode = self.config["map"]["mode"]
        vs = self._views(x.shape[0], views)

        def wanted(name):
            return names is None or name in names

        feats = context = context_feats = None
        with devices.autocast(self.device):
            if self.features is not None and wanted("features") and not wanted("own"):
                # Only the encoder: the decoder and the segmentation head serve the own map alone.
                feats = self.net.stage_features(x, self.feature_channels())
            elif self.features is not None and wanted("features"):
                recon, _, _, seg, feats = self.net(x, features=True, channels=self.feature_channels())
            elif wanted("own"):
                recon, _, _, seg = self.net(x)
            if self.context_features is not None and wanted("context_features") and not wanted("context"):
                # Only the encoder: the decoder serves the context map alone (not in the image score).
                context_feats = self.context.stage_features(
                    x, self.feature_channels(self.context_features, self.context))
            elif self.context_features is not None and wanted("context_features"):
                context, context_feats = self.context(
                    x, features=True, channels=self.feature_channels(self.context_features, self.context))
            elif self.context is not None and wanted("context"):
                context = self.context(x)
        parts = {}
        if wanted("own"):
            parts["own"] = self._own_map(x, recon, seg, mode, vs)
        if feats is not None:
            parts["features"] = self._feature_map(feats, x.shape[-2:], self.features, vs, picked=True)
        if context is not None and wanted("context"):
            parts["context"] = self._context_map(x, context)
        if context_feats is not None:
            parts["context_features"] = self._feature_map(context_feats, x.shape[-2:], self.context_features, vs,
                                                          picked=True)
        return {k: v for k, v in parts.items() if wanted(k)}

    def _context_map(self, x, logits) -> torch.Tensor:
        """The context segmenter's probability of "foreign here" (with map.context_logits its
        logit), smoothed; with map.context_flips the mean over the image and its three mirror images
        (each mirrored back). Good parts show up mirrored (training flips them), so each mirror
        image is another fair look, and the segmenter's errors differ from one to the next: on
        magnetic_tile the context map's pixel AUROC rose from 0.825-0.872 to 0.851-0.894 over eight
        saved models, the heat map's from 0.850-0.887 to 0.864-0.898 (bench/README.md,
        thirty-fourth session). Averaged as logits, one look's confident "good" outweighs another's
        hesitant "foreign", and the map keeps the spread that probabilities squeeze near 0 and 1:
        textured heat maps ranked tiles' pixels better so (bench/README.md, thirty-fifth session)."""
        as_logits = bool(self.config["map"].get("context_logits"))

        def values(looks):
            return looks.float() if as_logits else torch.sigmoid(looks.float())

        amap = values(logits)
        if self.config["map"].get("context_flips"):
            n = x.shape[0]
            mirrored = torch.cat([x.flip(-1), x.flip(-2), x.flip((-2, -1))])
            with devices.autocast(self.device):
                more = values(self.context(mirrored))
            amap = (amap + more[:n].flip(-1) + more[n:2 * n].flip(-2) + more[2 * n:].flip((-2, -1))) / 4
        return M.blur(amap, float(self.config["map"].get("sigma", 0)))[:, 0]

    def _own_map(self, x, recon, seg, mode, views) -> torch.Tensor:
        """The VAE's map: its segmentation head (or squared error), smoothed, per-position normalised."""
        if mode == "seg":
            amap = torch.sigmoid(seg.float())
        else:
            amap = (x - recon.float()).pow(2).mean(1, keepdim=True)
        sigma = float(self.config["map"].get("sigma", 0))
        if sigma > 0:
            amap = M.blur(amap, sigma)
        amap = amap[:, 0]
        if self.stats is not None:
            # Where good parts themselves vary (edges, streaks), a high raw value means less.
            at = (views if self.stats["mean"].shape[0] > 1 else torch.zeros_like(views)).to(amap.device)
            amap = (amap - self.stats["mean"][at]) / self.stats["std"][at]
        return amap

    def feature_channels(self, gaussians=None, net=None) -> list:
        """The Gaussians' channels (the VAE's by default) split by the network's stages, on the
        device; worked out once per fit, so scoring never waits on data-dependent shapes. All views
        use the same channels."""
        gaussians, net = (gaussians or self.features), (net or self.net)
        gaussians = gaussians[0] if isinstance(gaussians, list) else gaussians
        cached = self._splits.get(id(gaussians))
        if cached is None or cached[0] is not gaussians:
            cached = self._splits[id(gaussians)] = (gaussians, net.split_channels(gaussians.channels, self.device))
        return cached[1]

    def _feature_map(self, feats, size, gaussians: list | None = None, views: torch.Tensor | None = None,
                     picked: bool = False) -> torch.Tensor:
        """feats: the images' stage features (picked: only the Gaussians' channels, in order);
        gaussians: one per view (the VAE encoder's by default)."""
        gaussians = gaussians or self.features
        feats = feats.float()
        if len(gaussians) == 1:
            d = gaussians[0].distance(feats, picked)
        else:  # each image against its own view's Gaussians
            views = self._views(feats.shape[0], views)
            d = feats.new_empty(feats.shape[0], *feats.shape[-2:])
            for v in views.unique().tolist():
                at = (views == v).nonzero().flatten().to(feats.device)
                d[at] = gaussians[v].distance(feats[at], picked)
        # The log tames the distances' long tail on good images (rare layouts on circuit boards),
        # which otherwise set the held-out threshold so high that few defects were caught.
        d = torch.log(d + 1e-3)
        d = F.interpolate(d[:, None], size=tuple(size), mode="bilinear", align_corners=False)
        return M.blur(d, 2.0)[:, 0]

    @torch.inference_mode()
    def fit_feature_stats(self, train: torch.Tensor, hold: torch.Tensor, cells: int | None = None,
                          channels: int | None = None, seed: int = 0, context_features: bool = False,
                          train_views=None, hold_views=None) -> None:
        """Gaussians of the VAE encoder's features over the good training images, and with
        context_features those of the context segmenter's encoder too (where the model has one),
        one set per view; then the spread of all maps on the held-out good images, which puts them
        on one scale (see feature_stats)."""
        self.config["map"].pop("use", None)  # a choice of maps made on the old scales
        self.features = self.context_features = None
        self.config["map"].pop("features", None)
        self.config["map"].pop("context_features", None)
        train_views = self._views(train.shape[0], train_views)
        self.features, self.config["map"]["features"] = self._fit_gaussians(
            self.net, train, train_views, cells, channels, seed, "features.")
        if context_features and self.context is not None:
            # Trained to tell a foreign surface from good, its features describe a tile better than
            # the VAE's (magnetic_tile +0.03 image AUROC), but on circuit boards this map is at
            # chance and its false peaks cost up to 0.03 (bench/README.md): an option, off by default.
            self.context_features, self.config["map"]["context_features"] = self._fit_gaussians(
                self.context, train, train_views, cells, channels, seed + 1, "context_features.")
        self.fit_combination(hold, hold_views)

    def _fit_gaussians(self, net, train, views, cells, channels, seed, prefix):
        """([FeatureGaussians of `net`'s stage features over each view's `train` images], their
        config entry)."""
        from core.inspect import feature_stats as FS

        picked = FS.pick_channels(sum(net.stage_widths()), channels or FS.CHANNELS, seed)
        split = net.split_channels(picked, self.device)
        with devices.autocast(self.device):
            grid = net.stage_features(train[:1].to(self.device), split).shape[-1]

        def batches(images):  # forward passes in small batches; sums over groups of FIT_GROUP images
            group, size = [], 0
            for i in range(0, images.shape[0], self.batch):
                with devices.autocast(self.device):
                    feats = net.stage_features(images[i:i + self.batch].to(self.device), split)
                group.append(feats.float())  # outside autocast: the sums are float32 (see FeatureGaussians.fit)
                size += feats.shape[0]
                if size >= FIT_GROUP:
                    yield torch.cat(group)
                    group, size = [], 0
            if group:
                yield torch.cat(group)

        fitted, counts = [], []
        for v in range(self.n_views):
            images = train[(views == v).nonzero().flatten()]
            if images.shape[0] == 0:
                raise AppError(f"No good training image has the shape of view {v + 1} "
                               f"({V.describe(self.view_edges)[v]}).", "Retrain: the views come from the training images.")
            view_cells = cells or FS.cells_for(grid, images.shape[0], picked.numel())
            fitted.append(FS.FeatureGaussians.fit(batches(images), picked, view_cells, picked=True))
            counts.append(int(images.shape[0]))
        entry = {"cells": fitted[0].cells if len(fitted) == 1 else [g.cells for g in fitted],
                 "channels": int(picked.numel()), "images": counts[0] if len(counts) == 1 else counts,
                 "tensors": [prefix + "mean", prefix + "precision_upper", prefix + "channels"]
                 + ([f"{prefix}view<v>.*"] if len(fitted) > 1 else [])}
        return fitted, entry

    @torch.inference_mode()
    def fit_combination(self, hold: torch.Tensor, views=None) -> None:
        """The median and upper tail (99.9th percentile minus median) of each map on held-out good
        images: the scale on which they are summed. The tail, not the interquartile range: a map
        whose bulk is flat but whose good images have rare high pixels (the context segmenter's)
        was blown up by its narrow IQR and its false peaks decided the image scores (deeppcb image
        AUROC 0.660 with IQR vs 0.861 with the tail, magnetic_tile 0.808 vs 0.812; bench/README.md).
        With several views, one scale per view (magnetic_tile: image AUROC 0.928 vs 0.920 with one
        scale for all; bench/README.md); a view without held-out images takes the whole set's.
        Call after the other fits (a model with one map needs none)."""
        self.config["map"].pop("use", None)  # a choice of maps made on the old scales
        self.config["map"].pop("heat_to_score", None)
        self.config["map"].pop("combine", None)
        self.config["map"].get("features", {}).pop("combine", None)
        views = self._views(hold.shape[0], views)
        collected: dict = {}
        for i in range(0, hold.shape[0], self.batch):
            for name, m in self.map_parts(hold[i:i + self.batch].to(self.device), None, views[i:i + self.batch]).items():
                collected.setdefault(name, []).append(m.float().cpu())
        if len(collected) < 2:
            return

        def spread(maps):  # median and upper tail, on a subsample when there are many pixels
            flat = maps.flatten()[::max(1, maps.numel() // 4_000_000)].numpy()
            median, tail = np.percentile(flat, [50, COMBINE_TAIL])
            return [float(median), max(float(tail - median), 1e-6)]

        combine = {}
        for name, maps in collected.items():
            maps = torch.cat(maps)
            whole = spread(maps)
            combine[name] = whole if self.n_views == 1 else [
                spread(maps[views == v]) if (views == v).any() else whole for v in range(self.n_views)]
        self.config["map"]["combine"] = combine

    @torch.inference_mode()
    def fit_position_stats(self, x: torch.Tensor, views=None, border_tails: bool = True) -> None:
        """Per-position mean/sd of the map over good images (smoothed, with a floor), per view, the
        sd widened near the image's border where the normalised map has a longer tail there
        (border_tail_factors). Fit these before the feature statistics: their combination is
        measured on the normalised map."""
        self.config["map"].pop("use", None)  # a choice of maps made on the old scales
        self.config["map"].pop("heat_to_score", None)
        self.stats = None
        self.features = self.context_features = None
        self.config["map"].pop("features", None)
        self.config["map"].pop("context_features", None)
        views = self._views(x.shape[0], views)
        context, self.context = self.context, None  # the statistics are of the VAE's own map
        try:
            _, maps = self.score_tensor(x, keep_maps=True, views=views)
        finally:
            self.context = context
        means, sds = [], []
        for v in range(self.n_views):
            view_maps = maps[views == v]
            if view_maps.shape[0] == 0:
                raise AppError(f"No good image has the shape of view {v + 1} ({V.describe(self.view_edges)[v]}).",
                               "Retrain: the views come from the training images.")
            mean = view_maps.mean(0)
            sd = view_maps.std(0) if view_maps.shape[0] > 1 else torch.ones_like(mean)
            mean = M.blur(mean[None, None], 2.0)[0, 0]
            sd = M.blur(sd[None, None], 2.0)[0, 0]
            sd = sd + 0.1 * sd.mean() + 1e-6
            if border_tails:
                sd = sd * border_tail_factors(view_maps, mean, sd, getattr(self.net, "multiple", 16))
            means.append(mean)
            sds.append(sd)
        self.stats = {"mean": torch.stack(means).to(self.device), "std": torch.stack(sds).to(self.device)}

    def tensors(self) -> dict:
        net, context = self._nets_to_save
        out = {k: v.cpu() for k, v in net.state_dict().items()}
        if self.stats is not None:  # (S, S) for one view, as before views existed
            out.update({f"stats.{k}": (v[0] if v.shape[0] == 1 else v).cpu() for k, v in self.stats.items()})
        for gaussians, prefix in ((self.features, "features."), (self.context_features, "context_features.")):
            for v, g in enumerate(gaussians or ()):
                out.update({k: t for k, t in g.tensors(_view_prefix(prefix, v)).items()
                            if v == 0 or not k.endswith("channels")})
        if context is not None:
            out.update({f"context.{k}": v.cpu() for k, v in context.state_dict().items()})
        return out

    def _image_scores(self, maps: torch.Tensor) -> torch.Tensor:
        how = self.config["map"].get("score", "max")
        flat = maps.flatten(1)
        if how == "max":
            return flat.amax(1)
        if how.startswith("top"):  # mean of the top fraction, e.g. "top0.01"
            k = max(1, int(flat.shape[1] * float(how[3:])))
            return flat.topk(k, dim=1).values.mean(1)
        raise AppError(f"Unknown score rule '{how}' in config.json.", "Retrain the model.")

    @torch.inference_mode()
    def score_tensor(self, x: torch.Tensor, keep_maps: bool = True, views=None):
        """Score preprocessed images; returns (scores (N,), maps (N, S, S) or None) on CPU.
        views: each image's view (views_of), needed when the model has several."""
        views = self._views(x.shape[0], views)
        order = None
        if self.n_views > 1 and views.numel() > 1 and bool((views[1:] < views[:-1]).any()):
            # Batches of one view each where possible: each view's Gaussians are read once a batch.
            order = torch.argsort(views, stable=True)
            x, views = x[order], views[order]
        # Results stay on the device until the end (maps: until MAPS_IN_FLIGHT bytes), so a GPU is
        # not stopped after every batch to hand them over.
        scores, maps, pending = [], [], []
        with devices.oom_guard("Inspection"):
            for i in range(0, x.shape[0], self.batch):
                xb = x[i:i + self.batch].to(self.device, non_blocking=True)
                m, scored = self._maps(xb, views[i:i + self.batch], heat=keep_maps)
                scores.append(self._image_scores(scored))
                if keep_maps:
                    pending.append(m)
                    if sum(t.numel() for t in pending) * 4 >= MAPS_IN_FLIGHT:
                        maps.append(torch.cat(pending).float().cpu())
                        pending = []
            if pending:
                maps.append(torch.cat(pending).float().cpu())
        s = torch.cat(scores).float().cpu() if scores else torch.zeros(0)
        m = torch.cat(maps) if keep_maps and maps else None
        if order is not None:  # back to the caller's order
            back = torch.empty_like(order)
            back[order] = torch.arange(order.numel())
            s = s[back]
            m = m[back] if m is not None else None
        return s, m

    def verdicts(self, scores, sensitivity: float | None = None):
        sens = self.sensitivity if sensitivity is None else sensitivity
        norm = normalised(scores, self.calibration, sens)
        return norm, ["FAIL" if v >= 0.5 else "PASS" for v in norm]

    def inspect_paths(self, paths, sensitivity: float | None = None, keep_maps: bool = False,
                      progress=None, check_cancelled=None):
        """Score image files in chunks. Returns (rows, maps by path or None, skipped)."""
        rows, maps_out, skipped = [], {}, []
        paths = [Path(p) for p in paths]
        chunk = 64
        for start in range(0, len(paths), chunk):
            if check_cancelled:
                check_cancelled()
            part = paths[start:start + chunk]
            arrays, shapes, skip = D.load_batch(part, self.prep)
            skipped += skip
            ok = [(p, a, s) for p, a, s in zip(part, arrays, shapes) if a is not None]
            if ok:
                x = torch.from_numpy(np.stack([a for _, a, _ in ok]))
                scores, maps = self.score_tensor(x, keep_maps=keep_maps,
                                                 views=self.views_of([s for _, _, s in ok]))
                norm, verdicts = self.verdicts(scores.numpy(), sensitivity)
                for j, (p, _, shape) in enumerate(ok):
                    rows.append({"path": str(p), "score": float(scores[j]), "normalized_score": float(norm[j]),
                                 "verdict": verdicts[j], "height": int(shape[0]), "width": int(shape[1])})
                    if keep_maps:
                        maps_out[str(p)] = maps[j].numpy()
            if progress:
                progress(min(start + chunk, len(paths)), len(paths))
        return rows, (maps_out if keep_maps else None), skipped


def heatmap_overlay(image_path, amap: np.ndarray, calibration: dict, out_path) -> Path:
    """Write the image with its anomaly map overlaid (transparent below the threshold's half,
    red-yellow above), at the image's own size, as PNG."""
    from PIL import Image

    arr = D.read_image(image_path, 3)
    h, w = arr.shape[:2]
    if max(h, w) > 2048:  # keep heat maps reasonable for huge inputs
        f = 2048 / max(h, w)
        h, w = max(1, int(h * f)), max(1, int(w * f))
        arr = np.asarray(Image.fromarray((arr * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) / 255.0
    m = np.asarray(Image.fromarray(amap.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
    thr = max(calibration["threshold"], 1e-12)
    level = np.clip(m / thr, 0, 2) / 2.0  # 0.5 = at threshold
    alpha = np.clip((level - 0.25) / 0.5, 0, 1)[..., None] * 0.6
    color = np.stack([np.ones_like(level), np.clip(level * 2 - 1, 0, 1), np.zeros_like(level)], -1)
    out = arr * (1 - alpha) + color * alpha
    img = Image.fromarray((np.clip(out, 0, 1) * 255).astype(np.uint8), "RGB")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    img.save(out_path, format="PNG")
    return out_path
