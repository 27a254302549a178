"""Image inspector benchmark: ours vs a textbook conv VAE, same data, same wall-clock budget.

For each data set (MVTec layout under ../shared/data/qa): train on train/good within the budget,
score test/ (good + defects), print image AUROC, pixel AUROC, AUPRO, F1 at the calibrated
threshold, train and inference images/s, and the inference rate of the whole scoring pipeline vs
a bare forward pass of the same network on the same tensors (target >= 0.9x). The bare forward is
the model's own computation: the VAE and, when the model has feature statistics, its stage features
and their Mahalanobis distances; "pipe/vae" also prints the ratio to the VAE's forward pass alone.

Usage: .venv/bin/python bench/inspect_images.py [--budget 600] [--sets magnetic_tile deeppcb] [--json OUT]
Long: start it with nohup into bench/out/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import core.inspect  # noqa: E402,F401  (first: importing core sets how OpenMP threads wait, before torch loads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.device import set_cpu_threads  # noqa: E402
from core.jobs import JobRunner  # noqa: E402

# Per data set: the model scale (grey; the tiles are grey, the boards binary) and the part type an
# operator would pick for it (core.inspect.maps.PART_TYPES; --part-type overrides it).
SETTINGS = {
    "magnetic_tile": {"image_size": 128, "patch": 64, "part_type": "textured"},
    "deeppcb": {"image_size": 256, "patch": 64, "part_type": "patterned"},
}


def _train(params):
    from core.inspect import train

    runner = JobRunner()
    last = [0.0]

    def listener(e):
        if e.type == "progress" and time.monotonic() - last[0] > 30:
            last[0] = time.monotonic()
            print(f"    [{e.step}/{e.total}] {e.message}", file=sys.stderr, flush=True)

    runner.add_listener(listener)
    h = runner.submit(train.run, params, kind="bench.train")
    h.wait()
    runner.shutdown(cancel=False)
    if h.error:
        raise h.error
    return h.result


def bare_forward(insp, vae_only=False, heat=False):
    """forward(batch, its views): the model's own computation for an image score (heat: for the
    heat map too), in inference mode on the same device: the network (without the VAE's decoder
    where the own map is not in use, as the pipeline runs it), with feature statistics the stage
    features (of both networks) and their Mahalanobis distances to each image's view's Gaussians,
    and the context segmenter: for a score its encoder alone where its map is not in the score;
    for a heat map the whole segmenter, over the image's mirror images too where the model
    averages them (map.context_flips). The pipeline adds resizing, blurring, normalising,
    combining and the image score to this. vae_only: the VAE's forward pass alone, for the cost
    of the others."""
    net = insp.net
    gauss = None if vae_only else insp.features
    context = None if vae_only else insp.context
    context_gauss = None if vae_only else insp.context_features
    maps = insp.maps_in_use() if heat else insp.score_maps()
    own = vae_only or "own" in maps
    decoded_context = context is not None and (heat or "context" in maps)
    mirrored = heat and bool(insp.config["map"].get("context_flips"))

    def distances(gaussians, feats, vb):
        return [gaussians[v].distance(feats[vb == v], picked=True) for v in vb.unique().tolist()]

    def forward(xb, vb):
        if gauss is None:
            out = net(xb)
        elif not own:  # the encoder alone, as the pipeline runs it where the own map is not used
            out = distances(gauss, net.stage_features(xb, insp.feature_channels()), vb)
        else:
            out = distances(gauss, net(xb, features=True, channels=insp.feature_channels())[4], vb)
        if context is None or (context_gauss is None and not decoded_context):
            return out  # the pipeline leaves out a segmenter whose map it does not sum
        more = context(torch.cat([xb.flip(-1), xb.flip(-2), xb.flip((-2, -1))])) if mirrored else None
        if context_gauss is None:
            return out, context(xb), more
        channels = insp.feature_channels(context_gauss, context)
        if not decoded_context:
            return out, distances(context_gauss, context.stage_features(xb, channels), vb)
        logits, feats = context(xb, features=True, channels=channels)
        return out, logits, more, distances(context_gauss, feats, vb)

    return forward


RATES = ("bare_forward", "pipeline", "bare_heat", "pipeline_heat", "vae_only")  # infer_images_per_s_<name>


def compared_rates(insp, x, views=None, seconds: float = 2.0, rounds: int = 7) -> dict:
    """Images/s of the bare forward and the pipeline, for scores alone and with heat maps, and of
    the VAE alone, on the same batches of x (sorted by view, as the pipeline sorts it), with the
    ratios pipeline / bare (scores, heat maps) and pipeline / VAE alone. Each batch goes through
    all five in turn, the order rotating from batch to batch, so a slow spell of the shared cores
    falls on all alike: timed one after the other, whole passes apart, the same code's ratio
    ranged from 0.67 to 1.09 on this 2-core machine (bench/README.md, twenty-ninth session). A
    round passes over x until each has run about `seconds`; rates and ratios are the medians of
    `rounds` rounds."""
    views = torch.zeros(x.shape[0], dtype=torch.long) if views is None else views
    bare, bare_heat, vae = bare_forward(insp), bare_forward(insp, heat=True), bare_forward(insp, vae_only=True)

    def pipeline(xb, vb):
        return insp.score_tensor(xb, keep_maps=False, views=vb)

    def pipeline_heat(xb, vb):
        return insp.score_tensor(xb, keep_maps=True, views=vb)

    runs = (bare, pipeline, bare_heat, pipeline_heat, vae)  # in the order of RATES
    batches = [(x[i:i + insp.batch].to(insp.device), views[i:i + insp.batch]) for i in range(0, x.shape[0], insp.batch)]
    rates = []
    with torch.inference_mode():
        for run in runs:  # warm-up
            run(*batches[0])
        turn = 0
        for _ in range(rounds):
            spent, images, t_round = [0.0] * len(runs), 0, time.monotonic()
            while images == 0 or time.monotonic() - t_round < seconds * len(runs):
                for xb, vb in batches:
                    for k in range(len(runs)):
                        which = (turn + k) % len(runs)
                        t0 = time.perf_counter()
                        runs[which](xb, vb)
                        spent[which] += time.perf_counter() - t0
                    turn += 1
                    images += xb.shape[0]
            rates.append([images / t for t in spent])
    rates = np.array(rates)  # rounds x RATES
    at = {name: k for k, name in enumerate(RATES)}
    out = {f"infer_images_per_s_{n}": round(float(np.median(rates[:, at[n]])), 2) for n in RATES}
    for name, over in (("pipeline_vs_bare", ("pipeline", "bare_forward")),
                       ("pipeline_vs_bare_heat", ("pipeline_heat", "bare_heat")),
                       ("pipeline_vs_vae_only", ("pipeline", "vae_only"))):
        out[name] = round(float(np.median(rates[:, at[over[0]]] / rates[:, at[over[1]]])), 3)
    return out


def run_set(name, root: Path, budget: float, seed: int, workdir: Path, variants=("ours", "baseline"),
            extra: dict | None = None, choose_maps: bool = False) -> dict:
    from core.inspect import data as D
    from core.inspect.evaluate import evaluate
    from core.inspect.score import Inspector

    out = {}
    for variant in variants:
        s = SETTINGS.get(name, {"image_size": 128, "patch": 64})
        params = {"data": str(root), "out": str(workdir / f"{name}_{variant}"), "time_budget": budget,
                  "seed": seed, "device": "cpu", "baseline": variant == "baseline", "resume": False,
                  **{k: v for k, v in s.items() if variant == "ours" or k != "part_type"},
                  **(extra if variant == "ours" and extra else {})}
        print(f"  training {variant} on {name} for {budget:.0f} s …", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        res = _train(params)
        train_wall = time.monotonic() - t0
        insp = Inspector.load(params["out"], "cpu")
        t0 = time.monotonic()
        ev = evaluate(insp, root)
        eval_wall = time.monotonic() - t0
        # Pipeline vs bare network on the same preprocessed tensors (a sample of 64 test images).
        sample = [i.path for i in D.scan(root).test][::max(1, len(ev["_items"]) // 64)][:64]
        arrays, shapes, _ = D.load_batch(sample, insp.prep)
        x = torch.from_numpy(np.stack([a for a in arrays if a is not None]))
        views = insp.views_of([s for a, s in zip(arrays, shapes) if a is not None])
        if views is not None:
            order = torch.argsort(views, stable=True)
            x, views = x[order], views[order]
        rates = compared_rates(insp, x, views)
        out[variant] = {
            "image_auroc": ev["image_auroc"], "pixel_auroc": ev["pixel_auroc"], "aupro": ev["aupro"],
            "f1": ev["f1"], "f1_max": ev["f1_max"], "threshold": ev["threshold"], "pass_rate_good": ev["pass_rate_good"],
            "catch_rate_defect": ev["catch_rate_defect"],
            "per_defect": {k: {kk: vv for kk, vv in v.items()} for k, v in ev["per_defect"].items()},
            "train_steps": res["steps"], "train_seconds": res["train_seconds"],
            "train_images_per_s": res["train_images_per_s"], "train_wall_s": round(train_wall, 1),
            "after_loop": res.get("after_loop"),
            "infer_images_per_s_end_to_end": round(len(ev["_items"]) / (ev["load_seconds"] + ev["score_seconds"]), 2),
            **rates, "eval_wall_s": round(eval_wall, 1),
            "image_size": s["image_size"], "views": insp.n_views,
        }
        print(f"  {variant}: {json.dumps({k: v for k, v in out[variant].items() if k != 'per_defect'})}",
              file=sys.stderr, flush=True)
        if choose_maps and variant == "ours" and len(insp.available_maps()) > 1:
            out[variant]["labelled_half"] = labelled_half(insp, root, seed)
    return out


def labelled_half(insp, root: Path, seed: int) -> dict:
    """With a few labelled images: half of each test type (drawn with `seed`) chooses the maps and
    calibrates the threshold (F1-optimal), the other half measures; all maps calibrated on the same
    half side by side."""
    from core.inspect import data as D
    from core.inspect import mapchoice
    from core.inspect.evaluate import eval_items, evaluate, load_labelled
    from core.inspect.score import calibrate

    items = eval_items(D.scan(root))
    rng = np.random.default_rng(seed)
    first = set()
    for label in sorted({i.label for i in items}):
        idx = [k for k, i in enumerate(items) if i.label == label]
        rng.shuffle(idx)
        first.update(idx[: len(idx) // 2])
    half_a = [items[k] for k in sorted(first)]
    half_b = [items[k] for k in range(len(items)) if k not in first]
    x, read, masks, has_masks, _, views = load_labelled(insp, half_a)
    labels = np.array([0 if i.is_good else 1 for i in read])
    choice = mapchoice.choose_maps(insp, x, labels, masks if has_masks else None, views=views)
    saved = dict(insp.config["calibration"]), insp.config["map"].get("use")
    out = {"maps": choice["use"], "images_choosing": len(read), "images_measuring": len(half_b)}
    try:
        for key, use in (("all_maps", None), ("chosen_maps", choice["use"])):
            insp.config["map"].pop("use", None)
            if use:
                mapchoice.apply_choice(insp, use)
            scores = insp.score_tensor(x, keep_maps=False, views=views)[0].numpy()
            insp.config["calibration"] = calibrate(scores[labels == 0], scores[labels == 1],
                                                   [1] * int((labels == 1).sum()))
            ev = evaluate(insp, root, items=half_b)
            out[key] = {k: ev[k] for k in ("image_auroc", "pixel_auroc", "aupro", "f1", "pass_rate_good",
                                           "catch_rate_defect")}
    finally:
        insp.config["calibration"] = saved[0]
        insp.config["map"].pop("use", None)
        if saved[1]:
            insp.config["map"]["use"] = saved[1]
    print(f"  labelled half ({len(read)} images choose, {len(half_b)} measure): maps {choice['use']}; "
          f"all maps {json.dumps(out['all_maps'])}; chosen {json.dumps(out['chosen_maps'])}",
          file=sys.stderr, flush=True)
    return out


def speed_only(name, root: Path, context_features: bool = False, part_type: str | None = None) -> dict:
    """Pipeline vs bare forward for both networks, untrained (speed does not depend on weights),
    ours with the maps its part type gives it; with context_features the fourth map too."""
    from core.inspect import data as D
    from core.inspect import model as M
    from core.inspect.maps import PART_TYPES
    from core.inspect.mapchoice import apply_choice
    from core.inspect.score import Inspector
    from core.inspect.train import DEFAULTS, default_context_scale

    s = SETTINGS.get(name, {"image_size": 128, "patch": 64})
    kind = {**DEFAULTS, **PART_TYPES[part_type or s.get("part_type", "general")],
            **({"context_features": True} if context_features else {})}
    out = {}
    for variant in ("ours", "baseline"):
        size = s["image_size"]
        if variant == "ours":
            arch = {**M.DEFAULT_ARCH, "channels": 1}
            cfg = {"map": {"mode": "seg", "sigma": 2.0, "score": "max"}}
            norm = "percentile"
        else:
            arch = {"type": "textbook_vae", "channels": 1, "size": size, "width": 32, "latent": 128}
            cfg = {"map": {"mode": "recon", "sigma": 0.0, "score": "max"}}
            norm = "fixed"
        cfg.update({"preprocess": {"size": size, "channels": 1, "normalise": norm},
                    "calibration": {"threshold": 1.0, "scale": 1.0}})
        torch.manual_seed(0)
        context = (M.ContextSegmenter({"channels": 1, "scale": default_context_scale(size)}).eval()
                   if variant == "ours" and kind["context"] else None)
        if context is not None:
            cfg["context"] = {"arch": context.arch}
        insp = Inspector(M.build(arch).eval(), cfg, torch.device("cpu"), context=context)
        paths = [i.path for i in D.scan(root).test][::7][:64]
        arrays, _, _ = D.load_batch(paths, insp.prep)
        x = torch.from_numpy(np.stack([a for a in arrays if a is not None]))
        if variant == "ours":
            insp.fit_position_stats(x[:16])
            if kind["feature_stats"]:
                insp.fit_feature_stats(x[16:], x[:16], context_features=kind["context_features"])
            elif context is not None:
                insp.fit_combination(x[:16])
            if kind["maps"]:
                apply_choice(insp, [m for m in insp.available_maps() if m in kind["maps"]])
            if context is not None:  # as training sets them
                insp.config["map"]["score_leaves_out"] = ["context"]
            if weights := {n: float(w) for n, w in kind["heat_weights"].items() if n in insp.maps_in_use()}:
                insp.config["map"]["heat_weights"] = weights
            if context is not None:
                insp.config["map"]["context_flips"] = bool(kind["context_flips"] and kind["flips"])
                insp.config["map"]["context_logits"] = bool(kind["context_logits"])
        rates = compared_rates(insp, x)
        out[variant] = {**rates, "image_size": size, "maps": insp.available_maps()}
        r = rates
        print(f"{name:14s} {variant:9s} pipeline {r['infer_images_per_s_pipeline']:7.2f} img/s, bare forward "
              f"{r['infer_images_per_s_bare_forward']:7.2f} img/s, ratio {r['pipeline_vs_bare']:.3f}; with heat maps "
              f"{r['infer_images_per_s_pipeline_heat']:7.2f} vs {r['infer_images_per_s_bare_heat']:7.2f}, ratio "
              f"{r['pipeline_vs_bare_heat']:.3f}; VAE alone {r['infer_images_per_s_vae_only']:7.2f} img/s, "
              f"ratio {r['pipeline_vs_vae_only']:.3f}", flush=True)
    return out


def _parameter(text: str):
    key, _, value = text.partition("=")
    return key.strip(), json.loads(value)


def fmt(v):
    return "  n/a" if v is None else f"{v:.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "qa"))
    ap.add_argument("--sets", nargs="+", default=["magnetic_tile", "deeppcb"])
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds per model (<= 600)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["ours", "baseline"],
                    help="train one of the two (a rerun after a change to ours; the ratios need both)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    ap.add_argument("--part-type", help="our inspector's part type for every set (default: each set's, see SETTINGS)")
    ap.add_argument("--context-features", action="store_true",
                    help="our inspector with its fourth map (Gaussians of the context segmenter's features)")
    ap.add_argument("--choose-maps", action="store_true",
                    help="also: choose our maps and threshold on half of each test type, measure on the other half")
    ap.add_argument("--context-scale", type=int, help="our context segmenter's shrink factor (default: from the image size)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="our inspector's training parameter KEY set to a JSON value (e.g. context=false); repeatable")
    ap.add_argument("--keep-models", metavar="DIR", help="write the trained model folders here (default: a temporary folder)")
    ap.add_argument("--speed-only", action="store_true",
                    help="only the pipeline vs bare-forward inference rates (untrained networks, about a minute)")
    args = ap.parse_args(argv)
    threads = set_cpu_threads()
    print(f"torch {torch.__version__}, {threads} CPU threads, budget {args.budget:.0f} s per model", flush=True)
    results = {}
    if args.speed_only:
        for name in args.sets:
            if (Path(args.data) / name).is_dir():
                results[name] = speed_only(name, Path(args.data) / name, args.context_features, args.part_type)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep_models or tmp)
        for name in args.sets:
            root = Path(args.data) / name
            if not root.is_dir():
                print(f"{root} is absent; skipped", flush=True)
                continue
            results[name] = run_set(name, root, args.budget, args.seed, workdir,
                                    (args.only,) if args.only else ("ours", "baseline"),
                                    {**({"part_type": args.part_type} if args.part_type else {}),
                                     **({"context_features": True} if args.context_features else {}),
                                     **({"context_scale": args.context_scale} if args.context_scale else {}),
                                     **dict(_parameter(kv) for kv in args.set)} or None,
                                    args.choose_maps)
    print()
    print(f"{'set':14s} {'model':9s} {'img AUROC':>9s} {'pix AUROC':>9s} {'AUPRO':>6s} {'F1':>6s} {'F1max':>6s} "
          f"{'train img/s':>11s} {'infer img/s':>11s} {'pipe/bare':>9s} {'with heat':>9s} {'pipe/vae':>8s}")
    for name, r in results.items():
        for variant, v in r.items():
            print(f"{name:14s} {variant:9s} {fmt(v['image_auroc']):>9s} {fmt(v['pixel_auroc']):>9s} "
                  f"{fmt(v['aupro']):>6s} {fmt(v['f1']):>6s} {fmt(v.get('f1_max')):>6s} {v['train_images_per_s']:11.2f} "
                  f"{v['infer_images_per_s_pipeline']:11.2f} {v['pipeline_vs_bare']:9.3f} "
                  f"{v['pipeline_vs_bare_heat']:9.3f} "
                  f"{v['pipeline_vs_vae_only']:8.3f}")
        half = (r.get("ours") or {}).get("labelled_half")
        if half:
            a, c = half["all_maps"], half["chosen_maps"]
            print(f"{name:14s} labelled half, all maps {fmt(a['image_auroc'])} / {fmt(a['pixel_auroc'])} "
                  f"F1 {fmt(a['f1'])}; chosen {'+'.join(half['maps'])} {fmt(c['image_auroc'])} / "
                  f"{fmt(c['pixel_auroc'])} F1 {fmt(c['f1'])}")
        o, b = r.get("ours"), r.get("baseline")
        if o and b and o["image_auroc"] and b["image_auroc"]:
            print(f"{name:14s} ratio ours/baseline image AUROC {o['image_auroc'] / b['image_auroc']:.3f}"
                  + (f", pixel AUROC {o['pixel_auroc'] / b['pixel_auroc']:.3f}"
                     if o["pixel_auroc"] and b["pixel_auroc"] else ""))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
