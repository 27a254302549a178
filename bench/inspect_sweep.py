"""Compare inspector settings side by side: train each variant of a JSON file of settings on one
data set for a fixed number of optimiser steps (in parallel processes), evaluate each on the test
split, and print image AUROC, pixel AUROC (pipeline and without the per-position normalisation)
and per-defect figures. Steps, not seconds, so a GPU can stand in for the CPU: give each variant
the steps the 2-core CPU makes in the benchmark's budget (`--cpu-steps-file`, or measure them with
`--measure-cpu`).

    .venv/bin/python bench/inspect_sweep.py VARIANTS.json --data ../shared/data/qa/magnetic_tile \
        [--device cuda] [--jobs 8] [--json OUT]

VARIANTS.json: {"name": {"steps": 1500, ...train parameters (patch, batch, large_defects, arch...)}}
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_one(name: str, params: dict, data: str, device: str, workdir: str, image_size: int) -> dict:
    import core.inspect  # noqa: F401  (OMP settings before torch)
    import torch

    from core.inspect import train
    from core.inspect.evaluate import evaluate
    from core.inspect.score import Inspector
    from core.jobs import JobRunner

    torch.set_num_threads(2)
    p = {"data": data, "out": f"{workdir}/{name}", "device": device, "resume": False,
         "image_size": image_size, "checkpoint_every_s": 0, **params}
    runner = JobRunner()
    t0 = time.monotonic()
    handle = runner.submit(train.run, p, kind="sweep")
    handle.wait()
    runner.shutdown(cancel=False)
    if handle.error:
        return {"name": name, "error": str(handle.error)}
    train_s = time.monotonic() - t0
    insp = Inspector.load(p["out"], device)
    ev = evaluate(insp, data)
    out = {"name": name, "steps": handle.result["steps"], "train_s": round(train_s, 1),
           "image_auroc": ev["image_auroc"], "pixel_auroc": ev["pixel_auroc"], "aupro": ev["aupro"],
           "per_defect": {k: [v.get("image_auroc"), v.get("pixel_auroc")] for k, v in ev["per_defect"].items()}}
    if insp.stats is not None:  # the same network without the per-position normalisation
        insp.stats = None
        ev2 = evaluate(insp, data, with_aupro=False)
        out.update({"image_auroc_raw": ev2["image_auroc"], "pixel_auroc_raw": ev2["pixel_auroc"]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "qa" / "magnetic_tile"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this variant in this process
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    variants = json.loads(Path(args.variants).read_text())
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, variants[args.one], args.data, args.device,
                                             args.workdir, args.image_size)), flush=True)
        return 0
    if not Path(args.data).is_dir():
        print(f"{args.data} is absent; nothing to compare", flush=True)
        return 0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        pending = list(variants)
        running: list[tuple[str, subprocess.Popen]] = []
        while pending or running:
            while pending and len(running) < args.jobs:
                name = pending.pop(0)
                cmd = [sys.executable, __file__, args.variants, "--data", args.data, "--device", args.device,
                       "--image-size", str(args.image_size), "--one", name, "--workdir", tmp]
                running.append((name, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                                       text=True)))
            time.sleep(1)
            for name, proc in list(running):
                if proc.poll() is None:
                    continue
                running.remove((name, proc))
                lines = [l for l in proc.stdout.read().splitlines() if l.startswith("RESULT ")]
                res = json.loads(lines[-1][7:]) if lines else {"name": name, "error": f"exit {proc.returncode}"}
                results.append(res)
                print(json.dumps(res), flush=True)
    print()
    print(f"{'variant':28s} {'steps':>5s} {'img':>6s} {'pix':>6s} {'aupro':>6s} {'img_raw':>7s} {'pix_raw':>7s}  per defect img/pix")
    f = lambda v: "   n/a" if v is None else f"{v:6.3f}"  # noqa: E731
    for r in sorted(results, key=lambda r: r["name"]):
        if "error" in r:
            print(f"{r['name']:28s} error: {r['error']}")
            continue
        per = " ".join(f"{k[:5]} {a:.2f}/{b:.2f}" for k, (a, b) in sorted(r["per_defect"].items())
                       if a is not None and b is not None)
        print(f"{r['name']:28s} {r['steps']:5d} {f(r['image_auroc'])} {f(r['pixel_auroc'])} {f(r['aupro'])} "
              f"{f(r.get('image_auroc_raw')):>7s} {f(r.get('pixel_auroc_raw')):>7s}  {per}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
