"""Image AUROC of each anomaly map of a trained inspector, of every sum of them, and of image-level combinations.

Post hoc, on a model folder made by `lienzo inspect train` (or `inspect_images.py --keep-models`)
and its MVTec-layout data set. Each map is on the model's own scale (centred and scaled on the
held-out good images, as the heat map sums them). Prints, on the test split:
- the image AUROC (maximum of the map) of each map and of every sum of maps, the model's own
  score marked;
- image-level combinations: each candidate's maximum standardised by the mean and sd of its maxima
  on the training's held-out good images (the same images, drawn again from the model's seed;
  far-above ones left out, as the threshold does), then their maximum or sum.
Which sum ranks parts best differs between data sets (bench/README.md, twenty-fourth section);
this is the measurement behind that.

    .venv/bin/python bench/inspect_map_sums.py MODEL DATA [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import core.inspect  # noqa: E402,F401  (first: importing core sets how OpenMP threads wait, before torch loads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHORT = {"own": "O", "features": "F", "context": "C", "context_features": "X"}


def map_maxima(insp, x, views, combos) -> dict:
    """Per image, the maximum of each sum of scaled maps in `combos` (tuples of map names)."""
    names = sorted({n for c in combos for n in c})
    out = {c: [] for c in combos}
    with torch.inference_mode():
        for i in range(0, x.shape[0], insp.batch):
            vs = None if views is None else views[i:i + insp.batch]
            parts = insp.scaled_parts(x[i:i + insp.batch].to(insp.device), names, vs)
            for c in combos:
                out[c].append(sum(parts[n] for n in c).flatten(1).amax(1).float().cpu().numpy())
    return {c: np.concatenate(v).astype(np.float64) for c, v in out.items()}


def label(combo) -> str:
    return "+".join(SHORT.get(n, n) for n in combo)


def main(argv=None) -> int:
    from core.device import set_cpu_threads
    from core.inspect import data as D
    from core.inspect.evaluate import eval_items, load_labelled
    from core.inspect.metrics import roc_auc
    from core.inspect.score import Inspector, far_above_the_rest
    from core.inspect.train import held_out_split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args(argv)
    set_cpu_threads()
    insp = Inspector.load(args.model, args.device)
    names = insp.available_maps()
    combos = [c for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]
    scored = tuple(n for n in names if n in insp.score_maps())
    ds = D.scan(args.data)

    x, read, _, _, _, views = load_labelled(insp, eval_items(ds))
    y = np.array([0 if i.is_good else 1 for i in read])
    if y.min() == y.max():
        print("The test split needs good and defective images.", file=sys.stderr)
        return 2
    test = map_maxima(insp, x, views, combos)

    # The training's held-out good images, drawn again as training drew them.
    training = insp.config["training"]
    xt, _, _, _, _, tv = load_labelled(insp, list(ds.train))
    view = tv if tv is not None else torch.zeros(xt.shape[0], dtype=torch.long)
    hold, _ = held_out_split(view, tv is not None, int(training["seed"]), float(training.get("holdout", 0.1)))
    if len(hold) != training["holdout_images"]:
        print(f"warning: {len(hold)} held-out images drawn, the model held out {training['holdout_images']} "
              "(the data set changed since training?)", file=sys.stderr)
    held = map_maxima(insp, xt[hold], None if tv is None else tv[hold], combos)

    def standardised(c):
        h = held[c]
        h = np.delete(h, far_above_the_rest(h))
        return (test[c] - h.mean()) / max(h.std(ddof=1), 1e-12)

    results = {"maps": names, "score_sums": label(scored), "test_images": int(y.size), "held_out": len(hold),
               "sums": {}, "image_level": {}}
    print(f"{args.model}: maps {', '.join(f'{SHORT[n]} {n}' for n in names)}; the score sums {label(scored)}")
    print(f"{y.size} test images ({int(y.sum())} defective), {len(hold)} held-out good images\n")
    print("image AUROC of the maximum of each sum of maps (on the heat map's scales)")
    for c in combos:
        auroc = roc_auc(y, test[c])
        results["sums"][label(c)] = auroc
        print(f"  {label(c):8s} {auroc:.3f}{'   <- the model scores this' if c == scored else ''}")
    singles = [(n,) for n in names if n != "context"]  # the context map is out of the score (score.py)
    candidates = {"singles": singles} | {f"{label(scored)} and {label(s)}": [scored, s] for s in singles}
    print("\nimage-level: maxima standardised on the held-out good images, then their maximum / sum")
    for title, members in candidates.items():
        if len(members) < 2:
            continue
        z = np.stack([standardised(c) for c in members])
        mx, sm = roc_auc(y, z.max(0)), roc_auc(y, z.sum(0))
        name = ", ".join(label(c) for c in members)
        results["image_level"][name] = {"max": mx, "sum": sm}
        print(f"  {name:16s} max {mx:.3f}  sum {sm:.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
