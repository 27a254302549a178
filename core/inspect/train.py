"""Training the image inspector as a job: `run(params, ctx)` for core.jobs.JobRunner.

Patches of good images (at a fixed scale) are corrupted with synthetic defects; the VAE learns to
redraw the good surface and its head to point at what changed. After training, the map is
normalised per position on good images and joined by maps of how unusual the encoder's features
are (feature_stats), of a whole-image segmenter trained alongside on foreign regions
(model.ContextSegmenter), and optionally of how unusual that segmenter's features are; the threshold
is calibrated on held-out good images. Progress reports loss and ETA; the
job stops at cancel, at the end of its epochs, or early enough that the whole job (reading, training,
fitting the statistics, calibrating) ends within its wall-clock budget; checkpoints
(safetensors + json) let an interrupted run resume. Same seed, same data -> same weights (CPU).
"""

from __future__ import annotations

import json
import math
import time
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
from core.inspect.maps import MAP_NAMES, PART_TYPES
from core.inspect.feeder import BatchFeeder
from core.inspect.synth import make_defects, make_foreign_regions

# Context-segmenter steps per VAE step. Its map kept improving with steps where the VAE's had levelled
# off (magnetic_tile, same VAE: 1350 -> 2700 context steps lifted the summed map from 0.795 / 0.759
# to 0.810 / 0.798 image / pixel AUROC; the VAE's 1500 vs 6000 steps on a GPU: no change), and at
# half resolution a context step costs a fifth to two fifths of a VAE step (tiles, 128 px).
CONTEXT_STEPS_PER_STEP = 2

DEFAULTS = {
    "image_size": 256,
    "channels": 1,
    "normalise": "percentile",
    "flips": True,
    "rot90": False,
    "patch": 64,
    "batch": 32,
    "lr": 2e-3,
    "beta": 0.01,          # weight of the KL term
    "ssim_weight": 1.0,
    "seg_weight": 1.0,
    "p_defect": 0.5,
    "epochs": None,
    "steps": None,
    "time_budget": None,   # seconds of wall clock for the whole job, fitting and calibrating included
    "seed": 0,
    "device": "auto",
    "holdout": 0.1,
    "sensitivity": 0.5,
    "arch": {},
    "baseline": False,     # textbook VAE (MSE + KL, max-pixel score) for comparisons
    "map_sigma": 2.0,
    "position_stats": True,   # normalise the map per position by good-image statistics
    "feature_stats": True,    # add a map of how unusual the features are (feature_stats)
    "context": True,          # add a whole-image segmenter of foreign regions (model.ContextSegmenter)
    "context_features": False,  # and a map of how unusual its encoder's features are (textures, tiles)
    "context_scale": None,    # the context segmenter's shrink factor; None: chosen from the image size
    "context_steps": CONTEXT_STEPS_PER_STEP,  # context-segmenter steps per VAE step
    "heat_weights": {},       # map name -> its weight in the heat map (1 where unset; not in the image score)
    "context_foreign": 0.5,   # share of the context segmenter's images with a foreign region (the rest: small defects)
    "context_flips": False,   # heat map: the context map averaged over the image's mirror images (where flips are on)
    "context_logits": False,  # heat map: the context map as the segmenter's logits, not probabilities
    "views": True,            # statistics per view where good images come in clearly different shapes
    "maps": None,             # the maps summed (names as Inspector.available_maps); None: all the model has
    "part_type": "general",   # which maps suit the product (maps.PART_TYPES); explicit keys override it
    "score": "max",
    "checkpoint_every_s": 60.0,
    "resume": True,
}


PREVIEW_EVERY_S = 3.0  # how often a watching GUI gets reconstructions from the live network
CONTEXT_PIXELS = 2**16  # pixels per context-segmenter batch at its own (shrunk) resolution
CONTEXT_MIN_BATCH = 8    # fewer whole images make batch norm's statistics too noisy
# Calls timed for the after-loop estimate (their median), so one slow call on shared cores does not
# set it: single calls of two 256-px images estimated the same work (deeppcb) at 55 to 106 s.
TIMED_CALLS = 5
# Good training images (of each view) whose maps give the per-position mean and sd of the VAE's own
# map. 64 left those statistics noisy: with the border tails (score.border_tail_factors) 128 lifted
# the own map's image AUROC on circuit boards from 0.838 to 0.876 and 0.937 to 0.949 (two models;
# 256 gave 0.888 and 0.955, but in a full run on the boards the time kept for after the loop grew
# by 39 s, about 40 training steps of 490; bench/README.md, twenty-sixth session).
POSITION_IMAGES = 128


def _stack(arrays):
    return torch.from_numpy(np.stack(arrays, 0))


class PatchSampler:
    """Random patches (with flips / 90-degree turns when allowed) from images cached in memory."""

    def __init__(self, images: torch.Tensor, patch: int, flips: bool, rot90: bool, g: torch.Generator,
                 views: torch.Tensor | None = None):
        self.images, self.patch, self.flips, self.rot90, self.g = images, patch, flips, rot90, g
        self.views = views  # each image's view, or None for one view
        self.last_views = None  # the views of the images of the last sample (None for one view)

    def sample(self, n: int) -> torch.Tensor:
        imgs, p, g = self.images, self.patch, self.g
        size = imgs.shape[-1]
        idx = torch.randint(0, imgs.shape[0], (n,), generator=g).tolist()
        self.last_views = self.views[idx] if self.views is not None else None
        if p >= size:
            out = imgs[idx].clone()
        else:
            ys = torch.randint(0, size - p + 1, (n,), generator=g).tolist()
            xs = torch.randint(0, size - p + 1, (n,), generator=g).tolist()
            out = torch.stack([imgs[i, :, y:y + p, x:x + p] for i, y, x in zip(idx, ys, xs)])
        if self.flips:
            fh = torch.rand(n, generator=g) < 0.5
            fv = torch.rand(n, generator=g) < 0.5
            out[fh] = out[fh].flip(-1)
            out[fv] = out[fv].flip(-2)
        if self.rot90:
            k = int(torch.randint(0, 4, (1,), generator=g))
            out = torch.rot90(out, k, dims=(-2, -1))
        return out


def default_context_scale(size: int) -> int:
    """The context segmenter's shrink factor for images of this size: half resolution where the
    image allows it, 4x cheaper steps (magnetic_tile, 10 minutes on 2 cores: pixel AUROC 0.653 ->
    0.779; bench/README.md). Sizes are multiples of 16 and the half-resolution net needs 32, so
    every size suits one of the two."""
    return 2 if size >= 128 and size % 32 == 0 else 1


def context_batch(whole: PatchSampler, n: int, g: torch.Generator, foreign: float = 0.5):
    """Whole good images (from a sampler whose patch is the whole image), a share `foreign` with
    foreign regions and the rest with the small synthetic defects the VAE trains on (so the context
    map also answers for those), and their target masks. Each image is first rolled by a few pixels:
    a small misalignment (and the seam it leaves at an edge) is part of a good surface, not a foreign band."""
    x = whole.sample(n)
    reach = max(1, x.shape[-1] // 16)
    for i in range(n):
        dy, dx = torch.randint(-reach, reach + 1, (2,), generator=g).tolist()
        x[i] = torch.roll(x[i], (dy, dx), dims=(-2, -1))
    half = int(round(n * foreign))
    views = whole.last_views
    xa, ta = make_foreign_regions(x[:half], whole.images, g, pool_views=whole.views,
                                  views=views[:half] if views is not None else None)
    xb, tb = make_defects(x[half:], g, 0.7)
    return torch.cat([xa, xb]), torch.cat([ta, tb])


def _focal(logits, target):
    """Focal loss: most pixels are easy background; the few defect pixels must count."""
    prob = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = torch.where(target > 0.5, prob, 1 - prob)
    return ((1 - pt) ** 2 * bce).mean() * 10.0, prob


def context_loss(net, x_in, target, amp_ctx):
    """Focal loss (few pixels are foreign) plus a soft Dice term (large regions must be filled),
    at the network's own resolution."""
    with amp_ctx:
        logits = net(x_in, full=False)
    scale = net.arch["scale"]
    if scale > 1:
        target = F.avg_pool2d(target, scale)
    focal, prob = _focal(logits.float(), target)
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return focal + dice


def loss_terms(net, x_clean, x_in, target, p, amp_ctx):
    with amp_ctx:
        recon, mu, logvar, seg = net(x_in, sample=True)
    recon = recon.float()
    if p["baseline"]:
        rec = F.mse_loss(recon, x_clean)
        kl = M.kl_divergence(mu.float(), logvar.float())
        return rec + p["beta"] * kl, {"rec": rec.detach(), "kl": kl.detach()}
    rec = F.mse_loss(recon, x_clean) + F.l1_loss(recon, x_clean)
    ssim = (1 - M.ssim_map(recon, x_clean)).mean()
    kl = M.kl_divergence(mu.float(), logvar.float())
    total = rec + p["ssim_weight"] * ssim + p["beta"] * kl
    parts = {"rec": rec.detach(), "ssim": ssim.detach(), "kl": kl.detach()}  # read once per step
    if seg is not None:
        focal, _ = _focal(seg.float(), target)
        total = total + p["seg_weight"] * focal
        parts["seg"] = focal.detach()
    return total, parts


def _arch_for(p) -> dict:
    if p["baseline"]:
        return {"type": "textbook_vae", "channels": p["channels"], "size": p["image_size"],
                "width": 32, "latent": 128, **p["arch"]}
    return {**M.DEFAULT_ARCH, "channels": p["channels"], **p["arch"]}


def _opt_state_tensors(opt, prefix: str = "opt") -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state_keys": {}}
    for pid, st in sd["state"].items():
        keys = []
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"{prefix}.{pid}.{k}"] = t
            keys.append(k)
        meta["state_keys"][str(pid)] = keys
    return tensors, meta


def _opt_load(opt, tensors, meta, prefix: str = "opt"):
    state = {}
    for pid, keys in meta["state_keys"].items():
        state[int(pid)] = {k: tensors[f"{prefix}.{pid}.{k}"] for k in keys}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder: Path, net, opt, rng_states, step, elapsed, p, context=None):
    """context: (network, optimiser, generator) of the context segmenter, when one trains alongside;
    rng_states: the patch sampler's generator state and then the context segmenter's, as they were
    right after the last batch trained on was made (core.inspect.feeder)."""
    from core.inspect.store import save_tensors

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    ot, ometa = _opt_state_tensors(opt)
    tensors.update(ot)
    meta = {"step": step, "elapsed": elapsed, "optimizer": ometa,
            "params": {k: v for k, v in p.items() if k not in ("resume",)}}
    if context is not None:
        tensors.update({f"context.{k}": v for k, v in context[0].state_dict().items()})
        ct, meta["context_optimizer"] = _opt_state_tensors(context[1], "context_opt")
        tensors.update(ct)
        tensors["rng.context"] = rng_states[1]
    tensors["rng.sampler"] = rng_states[0]
    tensors["rng.torch"] = torch.get_rng_state()
    save_tensors(folder / "checkpoint.safetensors", tensors)
    (folder / "checkpoint.json").write_text(json.dumps(meta, default=str))


def load_checkpoint(folder: Path, net, opt, g, p, context=None):
    from safetensors.torch import load_file

    meta_path, data_path = folder / "checkpoint.json", folder / "checkpoint.safetensors"
    if not (meta_path.is_file() and data_path.is_file()):
        return 0, 0.0
    meta = json.loads(meta_path.read_text())
    keep = ("image_size", "channels", "patch", "arch", "baseline", "seed", "normalise")
    if any(meta["params"].get(k) != p.get(k) for k in keep if k in meta["params"]):
        return 0, 0.0  # a checkpoint of another configuration: start afresh
    if (context is not None) != ("context_optimizer" in meta):
        return 0, 0.0  # with vs without the context segmenter: also another configuration
    tensors = load_file(str(data_path))
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    _opt_load(opt, tensors, meta["optimizer"])
    if context is not None:
        context[0].load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("context.")})
        _opt_load(context[1], tensors, meta["context_optimizer"], "context_opt")
        context[2].set_state(tensors["rng.context"])
    g.set_state(tensors["rng.sampler"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"]), float(meta["elapsed"])


@torch.inference_mode()
def _after_loop_seconds(net, images, dev, amp, positions: bool, features: bool, n_hold: int,
                        n_labelled: int, context=None, context_features: bool = False,
                        view_sizes: list[int] | None = None, context_passes: int = 1) -> float:
    """Seconds the work after the training loop will take, from timing the network on a few whole
    images: the position statistics (POSITION_IMAGES of each view), the feature stages over every training
    image (the VAE encoder's, and the context segmenter's with context_features), the Gaussians' sums
    (per view: view_sizes, the training images of each) and the maps of the held-out ones (feature
    statistics), the held-out and labelled images' scores. context_passes: the context segmenter's
    passes per heat map (4 with its mirror images)."""
    view_sizes = view_sizes or [images.shape[0]]
    from core.inspect import feature_stats as FS
    from core.inspect.score import FIT_GROUP, inference_batch

    x = images[:min(inference_batch(images.shape[-1], dev), images.shape[0])].to(dev)
    was_training = net.training
    net.eval()

    def median_seconds(fn, calls: int = TIMED_CALLS) -> float:
        fn()  # the first call pays for allocations and kernel choice
        times = []
        for _ in range(calls):
            t = time.monotonic()
            fn()
            devices.synchronize(dev)
            times.append(time.monotonic() - t)
        return float(np.median(times))

    def per_image(fn) -> float:
        with amp:
            return median_seconds(lambda: fn(x)) / x.shape[0]

    full = per_image(net)
    maps = (sum(min(POSITION_IMAGES, n) for n in view_sizes) if positions else 0) + n_hold + n_labelled
    combined = n_hold if (features or context is not None) else 0  # measuring the maps' spreads
    seconds = full * (maps + combined)
    if context is not None:
        context.eval()
        seconds += per_image(context) * (n_hold + n_labelled + combined) * context_passes
    sources = ([net] + ([context] if context is not None and context_features else [])) if features else []
    for source in sources:
        seconds += per_image(source.stage_features) * images.shape[0]
        # Accumulating the Gaussians' sums (float64, per region) costs about as much again on a CPU.
        picked = FS.pick_channels(sum(source.stage_widths()), FS.CHANNELS, 0)
        feats = source.stage_features(x, picked).float()
        feats = feats.repeat(-(-FIT_GROUP // feats.shape[0]), 1, 1, 1)[:FIT_GROUP]  # summed a group at a time

        groups = [feats, feats.flip(-1)]  # a second group in other memory, as every later one is

        def fitting(batches: int, cells: int) -> float:  # about a second each: long enough to time once
            t = time.monotonic()
            FS.FeatureGaussians.fit(groups[:batches], picked, cells, picked=True)
            devices.synchronize(dev)
            return time.monotonic() - t

        timed: dict = {}  # cells -> (one group's fit, one more group's sums)
        for n in view_sizes:
            cells = FS.cells_for(feats.shape[-1], n, picked.numel())
            if cells not in timed:
                once = fitting(1, cells)
                timed[cells] = (once, max(0.0, fitting(2, cells) - once))
            seconds += timed[cells][0] + timed[cells][1] * n / feats.shape[0]
    net.train(was_training)
    if context is not None:
        context.train()
    # A margin, and a second for writing the model. Timed before the loop, the same work takes longer
    # after ten minutes of training (the fits' large fresh allocations and the caches' state differ;
    # timing the fit itself did not tell them apart, bench/README.md, fifteenth session): with one
    # view (deeppcb) 0.9-1.4 times the estimate, with four (magnetic_tile) 1.4-1.7 times, and 1.6
    # took the whole reserve there (599.8 s of 600; twenty-first session).
    margin = 1.6 if len(view_sizes) == 1 else 1.9
    return margin * seconds + 1.0


def optimise(loss, opt, scaler) -> None:
    """One optimiser step; with a GradScaler (CUDA mixed precision) the loss is scaled first."""
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()


def held_out_split(view: torch.Tensor, by_view: bool, seed: int, share: float) -> tuple[list[int], list[int]]:
    """(held-out, training) indices of the good images: a deterministic `share` of them, spread
    over the set, held out to calibrate the threshold; with `by_view`, that share of each view
    (`view`: each image's view), since every view needs held-out images of its own."""
    n = view.numel()
    if not by_view:
        # At least 3 when the set allows: one held-out image says nothing about the spread of good scores.
        n_hold = max(3, int(round(n * share))) if n >= 9 else 1
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1)).tolist()
        return sorted(order[:n_hold]), sorted(order[n_hold:])
    hold = []
    for v in range(int(view.max()) + 1):
        members = (view == v).nonzero().flatten().tolist()
        count = max(3, int(round(len(members) * share)))
        pick = torch.randperm(len(members), generator=torch.Generator().manual_seed(seed + 1 + v))
        hold += [members[i] for i in pick[:count].tolist()]
    return sorted(hold), sorted(set(range(n)) - set(hold))


def left_out_warnings(calibration: dict) -> list[str]:
    """One line per held-out good image the threshold left out (score.far_above_the_rest), for the
    training log and the command line."""
    return [f"warning: the held-out good image {path} scored {score:.4g}, far above the others, and was left out "
            "of the threshold; check that it really is good"
            for path, score in zip(calibration.get("left_out_images", []), calibration.get("left_out_scores", []))]


def run(params: dict, ctx) -> dict:
    """Train an image inspector. params: data, out, and any of DEFAULTS. Returns a summary dict."""
    job_start = time.monotonic()
    part_type = params.get("part_type") or DEFAULTS["part_type"]
    if part_type not in PART_TYPES:
        raise AppError(f"Unknown part type '{part_type}'.", f"Use one of: {', '.join(PART_TYPES)}.")
    p = {**DEFAULTS, **PART_TYPES[part_type], **{k: v for k, v in params.items() if v is not None}}
    p["part_type"] = part_type
    if "data" not in p or "out" not in p:
        raise AppError("Training needs a data folder and an output folder.", "Give DATA and --out MODEL.")
    size = int(p["image_size"])
    if not 32 <= size <= 1024 or size % 16:
        raise AppError(f"Image size {size} is not supported.", "Use a multiple of 16 between 64 and 512.")
    p["image_size"] = size
    p["patch"] = min(int(p["patch"] or size), size)
    if p["patch"] % 16:
        raise AppError(f"Patch size {p['patch']} is not a multiple of 16.", "Use 32, 48, 64, 96, 128 ...")
    scale = p["context_scale"]
    if scale is not None and (int(scale) < 1 or size % (16 * int(scale))):
        raise AppError(f"The context segmenter cannot shrink {size}-px images by {scale}.",
                       "Leave context_scale unset, or use a factor that divides the image size into a multiple of 16.")
    if p["baseline"]:
        p["patch"] = size
    if not (p["epochs"] or p["steps"] or p["time_budget"]):
        p["epochs"] = 10
    if Path(p["out"]).exists() and not Path(p["out"]).is_dir():
        raise AppError(f"'{p['out']}' exists and is not a folder.", "Choose a new folder name for the model.")
    dev = devices.choose_device(p["device"])
    torch.manual_seed(int(p["seed"]))
    np.random.seed(int(p["seed"]) % 2**32)
    g = torch.Generator().manual_seed(int(p["seed"]))
    prep = {"size": size, "channels": int(p["channels"]), "normalise": p["normalise"] if not p["baseline"] else "fixed",
            "flips": bool(p["flips"]), "rot90": bool(p["rot90"])}

    ds = D.scan(p["data"])
    D.require_good(ds.train, ds.root)
    ctx.progress(0, 0, f"reading {len(ds.train)} good images")
    arrays, shapes, skipped = D.load_batch([i.path for i in ds.train], prep)
    for path, why in skipped:
        ctx.log(f"skipped {path}: {why}")
    good_paths = [i.path for i, a in zip(ds.train, arrays) if a is not None]
    shapes = [s for s, a in zip(shapes, arrays) if a is not None]
    arrays = [a for a in arrays if a is not None]
    if len(arrays) < 2:
        D.require_good([None] * len(arrays), ds.root)  # message: none / only one
    ctx.check_cancelled()
    # Images of clearly different shapes are different views of the product (core.inspect.views).
    edges = V.find_edges([V.aspect(s) for s in shapes]) if p["views"] and not p["baseline"] else []
    view = V.view_of([V.aspect(s) for s in shapes], edges)
    hold_idx, train_idx = held_out_split(view, bool(edges), int(p["seed"]), float(p["holdout"]))
    if edges:
        ctx.log("views by image shape: " + "; ".join(
            f"{r} ({int((view == v).sum())} images)" for v, r in enumerate(V.describe(edges))))
    train_views, hold_views = view[train_idx], view[hold_idx]
    train_imgs = _stack([arrays[i] for i in train_idx])
    hold_imgs = _stack([arrays[i] for i in hold_idx])

    arch = _arch_for(p)
    net = devices.conv_layout(M.build(arch).to(dev), dev)
    opt = torch.optim.Adam(net.parameters(), lr=float(p["lr"]))
    context = None  # (network, optimiser, generator) of the context segmenter
    context_scale = 1
    if p["context"] and not p["baseline"] and arch.get("type", "spatial_vae") == "spatial_vae":
        context_scale = int(p["context_scale"] or default_context_scale(size))
        cnet = devices.conv_layout(M.ContextSegmenter({"channels": prep["channels"], "scale": context_scale}).to(dev),
                                   dev)
        # Its own random stream: the VAE trains on the same patches with or without it.
        context_g = torch.Generator().manual_seed(int(p["seed"]) + 2)
        context = (cnet, torch.optim.Adam(cnet.parameters(), lr=float(p["lr"])), context_g)
    context_flips = bool(context and p["context_flips"] and prep["flips"])  # see Inspector._context_map
    context_steps = int(p["context_steps"])
    if context and context_steps < 1:
        raise AppError(f"{context_steps} context steps per step is too few.", "Use 1 or more.")
    given = p["heat_weights"]
    if not isinstance(given, dict) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) for w in given.values()):
        raise AppError(f"Heat-map weights must map anomaly maps to numbers, not {given!r}.",
                       'Give them as {"context": 2.0}, say.')
    if unknown := sorted(set(given) - set(MAP_NAMES)):
        raise AppError(f"Unknown anomaly map '{unknown[0]}' in the heat-map weights.", f"Use {', '.join(MAP_NAMES)}.")
    if hidden := sorted(name for name, w in given.items() if not w > 0):
        raise AppError(f"A heat-map weight of {given[hidden[0]]} would hide the {hidden[0]} map in the heat map.",
                       "Use a weight above 0 (1 sums it like the other maps).")
    if context and not 0.0 < float(p["context_foreign"]) <= 1.0:
        raise AppError(f"A foreign-region share of {p['context_foreign']} is out of range.",
                       "Use a share above 0 and at most 1 (0.5: half the context images).")
    context_size = max(CONTEXT_MIN_BATCH, CONTEXT_PIXELS // (size // context_scale) ** 2)
    out = Path(p["out"])
    ckpt_dir = out / "checkpoint"
    start_step, prev_elapsed = (load_checkpoint(ckpt_dir, net, opt, g, p, context) if p["resume"] else (0, 0.0))
    sampler = PatchSampler(train_imgs, p["patch"], prep["flips"], prep["rot90"], g)
    whole_images = (PatchSampler(train_imgs, size, prep["flips"], prep["rot90"], context[2],
                                 train_views if edges else None) if context else None)
    batch = int(p["batch"])
    patches_per_image = max(1, (size // p["patch"]) ** 2)
    steps_per_epoch = max(1, math.ceil(len(train_idx) * patches_per_image / batch))
    total_steps = int(p["steps"] or (p["epochs"] * steps_per_epoch if p["epochs"] else 0))
    amp = devices.autocast(dev)  # scoring's precision: the fits after the loop, and their estimate
    train_amp = devices.training_autocast(dev)
    fits_positions = bool(p["position_stats"] and not p["baseline"])
    fits_features = bool(p["feature_stats"] and not p["baseline"] and arch.get("type", "spatial_vae") == "spatial_vae")
    timed = bool(p["time_budget"])
    budget, after = float(p["time_budget"] or 0), 0.0  # budget: the loop's seconds, once reserved below
    if timed:
        # The budget is the job's: reading the images so far, and the work after the loop, come out of it.
        after = _after_loop_seconds(net, train_imgs, dev, amp, fits_positions, fits_features,
                                    len(hold_idx), len(ds.test) if ds.layout == "plain" else 0,
                                    context[0] if context else None, bool(p["context_features"]),
                                    [int((train_views == v).sum()) for v in range(len(edges) + 1)],
                                    4 if context_flips else 1)
        budget = max(0.0, budget - (time.monotonic() - job_start) - after)
        ctx.log(f"training for {budget:.0f} s of the {float(p['time_budget']):.0f} s budget; "
                f"about {after:.0f} s are kept for fitting the statistics and calibrating")
    scaler = torch.amp.GradScaler("cuda") if devices.amp_dtype(dev) == torch.float16 else None
    context_scaler = torch.amp.GradScaler("cuda") if scaler is not None else None

    def make_batch():  # in the feeder's thread: the only user of the generators from here on
        clean = sampler.sample(batch)
        if p["baseline"]:
            x_in, target = clean, torch.zeros(clean.shape[0], 1, *clean.shape[-2:])
        else:
            x_in, target = make_defects(clean, g, float(p["p_defect"]))
        extra = [context_batch(whole_images, context_size, context[2], float(p["context_foreign"]))
                 for _ in range(context_steps)] if context else []
        return clean, x_in, target, extra

    t0 = time.monotonic() - prev_elapsed
    last_ckpt = last_preview = time.monotonic()
    preview_model = getattr(ctx, "preview_model", None)  # the GUI's live reconstructions
    step, loss_avg, parts = start_step, None, {}
    net.train()
    if context:
        context[0].train()
    feeder = BatchFeeder(make_batch, [g] + ([context[2]] if context else []), dev)
    with devices.oom_guard("Training"), feeder:
        while True:
            elapsed = time.monotonic() - t0
            if total_steps and step >= total_steps:
                break
            # No step that would end past the budget; at least one, even when the budget is short.
            step_seconds = (elapsed - prev_elapsed) / (step - start_step) if step > start_step else 0.0
            if timed and elapsed + step_seconds >= budget and step > start_step:
                break
            ctx.check_cancelled()
            frac = max(step / total_steps if total_steps else 0.0,
                       (elapsed / budget if budget > 0 else 1.0) if timed else 0.0)
            lr = float(p["lr"]) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
            for group in opt.param_groups + (context[1].param_groups if context else []):
                group["lr"] = lr  # cosine decay over the run (steps or wall clock)
            (clean, x_in, target, extra), rng_states = feeder.next()
            loss, parts = loss_terms(net, clean, x_in, target, p, train_amp)
            optimise(loss, opt, scaler)
            for cx, ctarget in extra:
                closs = context_loss(context[0], cx, ctarget, train_amp)
                optimise(closs, context[1], context_scaler)
            if extra:
                parts["context"] = closs.detach()
                loss = loss + closs.detach()
            step += 1
            # One read of the device per step (each read waits for its queued work).
            values = torch.stack([loss.detach().float()] + [v.float() for v in parts.values()]).tolist()
            lv, parts = values[0], dict(zip(parts, values[1:]))
            if not math.isfinite(lv):
                raise AppError("Training diverged (the loss became infinite).", "Lower the learning rate (--lr).")
            loss_avg = lv if loss_avg is None else 0.95 * loss_avg + 0.05 * lv
            elapsed = time.monotonic() - t0
            rate = (step - start_step) / max(elapsed - prev_elapsed, 1e-6)
            if timed and not total_steps:
                eta, shown_total = max(0.0, budget - elapsed) + after, max(step, int(budget * rate))
            else:
                eta, shown_total = (total_steps - step) / max(rate, 1e-6), total_steps
            ctx.progress(step, shown_total, f"loss {loss_avg:.4f} · {rate * batch:.0f} patches/s · ETA {eta:.0f}s",
                         preview={"loss": loss_avg, "eta": round(eta)})
            if p["checkpoint_every_s"] and time.monotonic() - last_ckpt >= float(p["checkpoint_every_s"]):
                save_checkpoint(ckpt_dir, net, opt, rng_states, step, elapsed, p, context)
                last_ckpt = time.monotonic()
            if preview_model is not None and time.monotonic() - last_preview >= PREVIEW_EVERY_S:
                preview_model(net)
                last_preview = time.monotonic()
    train_seconds = time.monotonic() - t0
    loop_end = time.monotonic()
    ctx.check_cancelled()
    if preview_model is not None:
        preview_model(net)
    net.eval()
    if context:
        context[0].eval()

    from core.inspect.score import Inspector, calibrate

    config = {
        "task": "image",
        "arch": arch,
        "preprocess": prep,
        "map": {"mode": "recon" if (p["baseline"] or arch.get("type") == "textbook_vae" or not arch.get("seg_head"))
                else "seg", "sigma": 0.0 if p["baseline"] else float(p["map_sigma"]),
                "score": "max" if p["baseline"] else p["score"],
                "context_flips": context_flips, "context_logits": bool(context and p["context_logits"])},
        "training": {"steps": step, "seconds": round(train_seconds, 1), "images": len(train_idx),
                     "holdout_images": len(hold_idx), "holdout": float(p["holdout"]), "skipped": len(skipped),
                     "seed": int(p["seed"]), "part_type": p["part_type"],
                     "device": str(dev), "batch": batch, "patch": p["patch"], "lr": float(p["lr"]),
                     "beta": float(p["beta"]), "final_loss": loss_avg, "loss_parts": parts,
                     "images_per_s": round((step - start_step) * batch / max(train_seconds - prev_elapsed, 1e-6)
                                           / patches_per_image, 2),
                     "data_fingerprint": D.fingerprint(good_paths), "data": str(ds.root)},
        "sensitivity": float(p["sensitivity"]),
    }
    if edges:
        config["views"] = {"by": "aspect ratio (width / height)", "edges": edges, "ranges": V.describe(edges),
                           "images": [int((view == v).sum()) for v in range(len(edges) + 1)]}
    if context:
        config["context"] = {"arch": context[0].arch, "batch": context_size,
                             "steps_per_step": context_steps,
                             "tensors": "context.* in model.safetensors"}
    insp = Inspector(net, config, dev, context=context[0] if context else None)
    if fits_positions:
        ctx.progress(step, step, "measuring the map on good images")
        sel = torch.randperm(train_imgs.shape[0], generator=torch.Generator().manual_seed(7))
        if edges:  # up to POSITION_IMAGES of each view
            sel = torch.cat([sel[train_views[sel] == v][:POSITION_IMAGES] for v in range(len(edges) + 1)])
        else:
            sel = sel[:POSITION_IMAGES]
        insp.fit_position_stats(train_imgs[sel], train_views[sel] if edges else None)
        # The per-position mean/sd maps themselves are tensors (stats.mean, stats.std) in model.safetensors.
        config["map"]["position_stats"] = {"images": int(sel.numel()), "border_tails": True,
                                           "tensors": ["stats.mean", "stats.std"]}
    if fits_features:
        ctx.progress(step, step, "modelling the features of good images")
        ctx.check_cancelled()
        insp.fit_feature_stats(train_imgs, hold_imgs, seed=int(p["seed"]),  # and the maps' combination
                               context_features=bool(p["context_features"]),
                               train_views=train_views if edges else None, hold_views=hold_views if edges else None)
    elif context:
        insp.fit_combination(hold_imgs, hold_views if edges else None)
    ctx.progress(step, step, "calibrating the threshold on held-out good images")
    chosen = [name for name in insp.available_maps() if name in (p["maps"] or ())]
    if chosen:
        from core.inspect.mapchoice import apply_choice

        apply_choice(insp, chosen)
    if context and len(insp.available_maps()) > 1:
        config["map"]["score_leaves_out"] = ["context"]  # see Inspector.score_maps
    weights = {name: float(w) for name, w in p["heat_weights"].items()
               if name in insp.maps_in_use() and float(w) != 1.0}
    if weights and len(insp.maps_in_use()) > 1:
        config["map"]["heat_weights"] = weights  # see maps.heat_weights
    hold_scores, hold_heat = insp.score_tensor(hold_imgs, views=hold_views if edges else None)
    insp.fit_heat_to_score(hold_scores, hold_heat)
    labelled = [i for i in ds.test if ds.layout == "plain"]  # plain layout: user-labelled defects
    lab_scores, lab_labels = [], []
    if labelled:
        la, la_shapes, _ = D.load_batch([i.path for i in labelled], prep)
        keep = [(a, i, s) for a, i, s in zip(la, labelled, la_shapes) if a is not None]
        if keep:
            lab_scores = insp.score_tensor(_stack([a for a, _, _ in keep]),
                                           views=insp.views_of([s for _, _, s in keep]))[0].tolist()
            lab_labels = [0 if i.is_good else 1 for _, i, _ in keep]
    calibration = config["calibration"] = calibrate(hold_scores.tolist(), lab_scores, lab_labels)
    if calibration["left_out"]:
        odd = calibration["left_out_images"] = [str(good_paths[hold_idx[i]]) for i in calibration["left_out"]]
        for line in left_out_warnings(calibration):
            ctx.log(line)
    tensors = insp.tensors()
    saved = store.save_model(out, tensors, config)
    # A finished model no longer needs its resume checkpoint.
    for f in ("checkpoint.safetensors", "checkpoint.json"):
        (ckpt_dir / f).unlink(missing_ok=True)
    if ckpt_dir.is_dir() and not any(ckpt_dir.iterdir()):
        ckpt_dir.rmdir()
    # What the work after the loop took against what the time budget kept for it.
    after_loop = {"seconds": round(time.monotonic() - loop_end, 1), "reserved": round(after, 1) if timed else None}
    ctx.metrics.update({"steps": step, "train_seconds": round(train_seconds, 1), "after_loop": after_loop,
                        "threshold": saved["calibration"]["threshold"], "final_loss": loss_avg})
    return {"model": str(out), "steps": step, "train_seconds": round(train_seconds, 1), "after_loop": after_loop,
            "images": len(train_idx), "skipped": skipped, "threshold": saved["calibration"]["threshold"],
            "train_images_per_s": config["training"]["images_per_s"], "config": saved}
