"""Image inspector throughput on the device at hand: train and infer at 256 x 256 for a fixed
number of steps (CUDA with mixed precision when a GPU is present, CPU otherwise), printing images/s:
training (a VAE step and a context-segmenter step, as the inspector trains), a bare forward pass of
both networks, and the whole scoring pipeline (maps normalised per position, feature statistics,
the context map, image scores back on the host) with their ratio.

Usage: .venv/bin/python bench/inspect_gpu.py [--steps 200] [--size 256] [--batch 32] [--device auto]
                                             [--data ../shared/data/qa/magnetic_tile]
Without --data (or when it is absent) random textures are used: throughput does not depend on content.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import core.inspect  # noqa: E402,F401  (first: importing core sets how OpenMP threads wait, before torch loads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core import device as devices  # noqa: E402
from core.inspect import model as M  # noqa: E402
from core.inspect.synth import make_defects  # noqa: E402
from core.inspect.train import (CONTEXT_PIXELS, DEFAULTS, PatchSampler, context_batch, context_loss,  # noqa: E402
                                loss_terms, optimise)


def load_images(data: str | None, size: int, limit: int = 64) -> torch.Tensor:
    if data and Path(data).is_dir():
        from core.inspect import data as D

        ds = D.scan(data)
        arrays, _, _ = D.load_batch([i.path for i in ds.train[:limit]], {"size": size, "channels": 1,
                                                                       "normalise": "percentile"})
        arrays = [a for a in arrays if a is not None]
        if arrays:
            return torch.from_numpy(np.stack(arrays))
    g = torch.Generator().manual_seed(0)
    return M.blur(torch.randn(limit, 1, size, size, generator=g), 1.0) * 2


def pipeline_seconds(net, context, imgs, x, steps: int, dev, sync) -> float:
    """Seconds for `steps` batches through the inspector's whole scoring pipeline, with its
    statistics fitted on `imgs` as training does."""
    from core.inspect.score import Inspector

    config = {"task": "image", "preprocess": {"size": x.shape[-1], "channels": 1, "normalise": "percentile"},
              "map": {"mode": "seg", "sigma": DEFAULTS["map_sigma"], "score": DEFAULTS["score"]},
              "context": {"arch": context.arch}}
    insp = Inspector(net, config, dev, context=context)
    insp.batch = x.shape[0]
    insp.fit_position_stats(imgs)
    insp.fit_feature_stats(imgs, imgs[: max(2, imgs.shape[0] // 8)])
    insp.score_tensor(x, keep_maps=False)  # warm-up
    sync()
    t0 = time.monotonic()
    for _ in range(steps):
        insp.score_tensor(x, keep_maps=False)
    sync()
    return time.monotonic() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    dev = devices.choose_device(args.device)
    torch.manual_seed(0)
    imgs = load_images(args.data, args.size)
    g = torch.Generator().manual_seed(0)
    sampler = PatchSampler(imgs, args.size, True, False, g)
    net = M.build({**M.DEFAULT_ARCH, "channels": 1}).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    context = M.ContextSegmenter({"channels": 1}).to(dev)
    context_opt = torch.optim.Adam(context.parameters(), lr=1e-3)
    context_size = max(2, CONTEXT_PIXELS // (args.size * args.size))
    amp, train_amp = devices.autocast(dev), devices.training_autocast(dev)  # as the inspector scores and trains
    scaler = torch.amp.GradScaler("cuda") if devices.amp_dtype(dev) == torch.float16 else None
    context_scaler = torch.amp.GradScaler("cuda") if scaler is not None else None
    p = {**DEFAULTS}
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    with devices.oom_guard("The GPU benchmark"):
        # Train.
        net.train()
        context.train()
        batches = [make_defects(sampler.sample(args.batch), g) + context_batch(sampler, context_size, g)
                   for _ in range(min(args.steps, 8))]
        sync()
        t0 = time.monotonic()
        for step in range(args.steps):
            x_in, target, cx, ctarget = batches[step % len(batches)]
            clean = x_in  # throughput only: content does not change the cost
            loss, _ = loss_terms(net, clean.to(dev), x_in.to(dev), target.to(dev), p, train_amp)
            optimise(loss, opt, scaler)
            optimise(context_loss(context, cx.to(dev), ctarget.to(dev), train_amp), context_opt, context_scaler)
        sync()
        train_s = time.monotonic() - t0
        # Infer.
        net.eval()
        context.eval()
        x = sampler.sample(args.batch).to(dev)
        with torch.inference_mode(), amp:
            net(x)
            context(x)
            sync()
            t0 = time.monotonic()
            for _ in range(args.steps):
                recon, _, _, seg = net(x)
                torch.sigmoid(seg)
                torch.sigmoid(context(x))
            sync()
        infer_s = time.monotonic() - t0
        pipe_s = pipeline_seconds(net, context, imgs, x, args.steps, dev, sync)
    res = {"device": devices.describe(dev), "amp": str(devices.amp_dtype(dev)), "size": args.size,
           "batch": args.batch, "steps": args.steps,
           "train_images_per_s": round(args.steps * args.batch / train_s, 2),
           "infer_images_per_s": round(args.steps * args.batch / infer_s, 2),
           "pipeline_images_per_s": round(args.steps * args.batch / pipe_s, 2)}
    res["pipeline_vs_bare"] = round(res["pipeline_images_per_s"] / res["infer_images_per_s"], 3)
    print(json.dumps(res) if args.json else
          f"{res['device']} amp={res['amp']} {args.size}px batch {args.batch}: "
          f"train {res['train_images_per_s']} img/s, infer {res['infer_images_per_s']} img/s, "
          f"pipeline {res['pipeline_images_per_s']} img/s ({res['pipeline_vs_bare']}x the bare forward)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
