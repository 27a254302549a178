"""The image inspector end to end on one device, through the command line a user runs: train with a
wall-clock budget, evaluate, run with heat maps; then load the same model folder on the CPU and
check it scores the same images the same way (a model trained on a workstation's GPU is inspected
on a line PC without one). Prints one JSON object: the device's figures, the CPU's, and how far
their scores and verdicts agree.

Usage: .venv/bin/python bench/inspect_device_check.py DATA [--device cuda] [--budget 120]
                                                         [--image-size 128] [--out DIR]
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
KEEP = ("image_auroc", "pixel_auroc", "aupro", "f1", "threshold", "pass_rate_good", "catch_rate_defect",
        "infer_images_per_s", "score_maps")


def lienzo(*args) -> dict:
    """One `lienzo inspect ...` command with --json; its stdout parsed, its stderr passed on."""
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "desktop.launcher", "inspect", *map(str, args), "--json"],
                       cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"lienzo inspect {args[0]} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout)
    out["_wall_s"] = round(time.monotonic() - t0, 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budget", type=float, default=120.0, help="training wall-clock seconds")
    ap.add_argument("--steps", type=int, help="optimiser steps instead of a budget")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="keep the model folder and heat maps here")
    args = ap.parse_args(argv)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="lienzo_check_"))
    model, heat = work / "model", work / "heatmaps"
    length = ["--steps", args.steps] if args.steps else ["--time-budget", args.budget]
    trained = lienzo("train", args.data, "--out", model, "--device", args.device, "--image-size", args.image_size,
                     "--seed", args.seed, "--context-features", "--no-resume", *length)
    on_device = lienzo("eval", model, args.data, "--device", args.device)
    on_cpu = lienzo("eval", model, args.data, "--device", "cpu")
    tests = sorted(p for p in (Path(args.data) / "test").rglob("*") if p.is_file())
    picked = tests[:: max(1, len(tests) // 24)][:24]  # a spread over the defect types and good parts
    run_device = lienzo("run", model, *picked, "--device", args.device, "--heatmaps", heat)
    run_cpu = lienzo("run", model, *picked, "--device", "cpu")
    a = {r["path"]: r for r in run_device["results"]}
    b = {r["path"]: r for r in run_cpu["results"]}
    diffs = [abs(a[p]["score"] - b[p]["score"]) for p in a]
    res = {
        "device": args.device, "train": {k: trained.get(k) for k in ("steps", "threshold")} | {
            "wall_s": trained["_wall_s"]},
        "eval_device": {k: on_device.get(k) for k in KEEP} | {"wall_s": on_device["_wall_s"]},
        "eval_cpu": {k: on_cpu.get(k) for k in KEEP} | {"wall_s": on_cpu["_wall_s"]},
        "run": {"images": len(a), "heatmaps": len(list(heat.glob("*.png"))),
                "max_score_difference": round(max(diffs), 5),
                "threshold": run_device.get("threshold"),
                "verdicts_agree": sum(a[p]["verdict"] == b[p]["verdict"] for p in a)},
    }
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
