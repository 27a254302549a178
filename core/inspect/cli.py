"""`lienzo inspect …`: train, evaluate and run the QA inspector from the command line.

Machine-readable results go to stdout (JSON with --json), progress to stderr. Every command runs
its work as a job through core.jobs.JobRunner, so --project FILE records it like the GUI would.
This module must not import torch at import time (the CLI stays fast).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.errors import AppError
from core.inspect.maps import PART_TYPE_TEXT, PART_TYPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="inspect_command", metavar="ACTION")
    sub.required = True

    def common(p, project=True):
        p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
        p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
        if project:
            p.add_argument("--project", metavar="FILE", help="record the run and results in this project")

    t = sub.add_parser("train", help="train an image inspector on good images")
    t.add_argument("data", metavar="DATA", help="folder of good images (or an MVTec-style folder)")
    t.add_argument("--out", required=True, metavar="MODEL", help="model folder to write")
    t.add_argument("--image-size", type=int, default=256, help="images are resized to N x N (64-512)")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, help="passes over the training images")
    g.add_argument("--time-budget", type=float, metavar="SECONDS", help="finish the whole job (training, fitting, calibrating) within this wall-clock time")
    g.add_argument("--steps", type=int, help="optimiser steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--patch", type=int, default=64, help="training patch size (pixels at the model scale)")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--beta", type=float, default=0.01, help="weight of the KL term")
    t.add_argument("--latent", type=int, help="latent channels per position")
    t.add_argument("--width", type=int, help="channels of the first stage")
    t.add_argument("--depth", type=int, help="number of downsampling stages")
    t.add_argument("--colour", action="store_true", help="keep colour (default grey)")
    t.add_argument("--normalise", choices=["percentile", "fixed"], default="percentile",
                   help="percentile: per-image brightness/contrast normalisation (robust to lighting drift)")
    t.add_argument("--no-flips", action="store_true", help="no flip augmentation (asymmetric products)")
    t.add_argument("--rot90", action="store_true", help="90-degree rotation augmentation")
    t.add_argument("--sensitivity", type=float, default=0.5, help="0..1, higher flags more parts")
    t.add_argument("--baseline", action="store_true", help="train the textbook VAE instead (for comparison)")
    t.add_argument("--part-type", choices=list(PART_TYPES), default="general",
                   help="what the parts look like, which sets the maps that score them: "
                        + "; ".join(f"{k}: {text}" for k, text in PART_TYPE_TEXT.items()) + " (default general)")
    t.add_argument("--context-features", action="store_true",
                   help="add a fourth map, Gaussians of the context segmenter's features (textured parts "
                        "have it)")
    t.add_argument("--no-context", action="store_true",
                   help="without the whole-image context map (10-40 %% more VAE steps in a time budget; "
                        "patterned parts go without it)")
    t.add_argument("--one-view", action="store_true",
                   help="one set of good-part statistics for all images, even where they come in clearly "
                        "different shapes (default: one set per shape, see README)")
    t.add_argument("--no-resume", action="store_true", help="ignore a checkpoint left by an interrupted run")
    common(t)

    e = sub.add_parser("eval", help="measure an image inspector on labelled images")
    e.add_argument("model", metavar="MODEL")
    e.add_argument("data", metavar="DATA", help="MVTec-style folder (test/...) or good/ + defect folders")
    e.add_argument("--sensitivity", type=float)
    common(e)

    r = sub.add_parser("run", help="inspect images: score, verdict, optional heat maps")
    r.add_argument("model", metavar="MODEL")
    r.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders")
    r.add_argument("--heatmaps", metavar="DIR", help="write heat-map PNGs (overlaid on the image) here")
    r.add_argument("--sensitivity", type=float)
    common(r)

    c = sub.add_parser("calibrate", help="set the F1-optimal threshold from labelled images")
    c.add_argument("model", metavar="MODEL")
    c.add_argument("data", metavar="DATA")
    c.add_argument("--choose-maps", action="store_true",
                   help="first choose which of the model's anomaly maps to sum, by image (and pixel) "
                        "AUROC on these images")
    common(c)

    tt = sub.add_parser("train-table", help="train a tabular inspector (MLP VAE) on a CSV")
    tt.add_argument("csv", metavar="CSV")
    tt.add_argument("--out", required=True, metavar="MODEL")
    tt.add_argument("--label-column", metavar="NAME", help="rows labelled 1 here are left out (default 'label')")
    tt.add_argument("--epochs", type=int, default=200)
    tt.add_argument("--time-budget", type=float, metavar="SECONDS")
    tt.add_argument("--seed", type=int, default=0)
    tt.add_argument("--sensitivity", type=float, default=0.5)
    common(tt)

    et = sub.add_parser("eval-table", help="measure a tabular inspector on a labelled CSV")
    et.add_argument("model", metavar="MODEL")
    et.add_argument("csv", metavar="CSV")
    et.add_argument("--label-column", metavar="NAME", default="label")
    common(et)

    rt = sub.add_parser("run-table", help="score the rows of a CSV")
    rt.add_argument("model", metavar="MODEL")
    rt.add_argument("csv", metavar="CSV")
    rt.add_argument("--label-column", metavar="NAME", default="label", help="ignored for scoring if present")
    common(rt)


# -- plumbing ----------------------------------------------------------------------------------------

def _emit(args, result: dict, text_lines: list[str]) -> None:
    if getattr(args, "json", False):
        json.dump(result, sys.stdout, indent=2, default=_json_default)
        sys.stdout.write("\n")
    else:
        for line in text_lines:
            print(line)
    sys.stdout.flush()


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _open_project(args):
    path = getattr(args, "project", None)
    if not path:
        return None
    from core.project import Project

    return Project.open(path) if Path(path).exists() else Project.create(path)


def _run_job(fn, params, kind, title, project):
    from core.cli import run_job

    return run_job(fn, params, kind=kind, title=title, project=project)


def _expand(paths) -> list[Path]:
    from core.inspect.data import IMAGE_SUFFIXES

    if any(not str(p).strip() for p in paths):
        # Path("") is the current folder: a script's unset variable would inspect everything under it.
        raise AppError("An empty path was given among the images to inspect.",
                       "Check the command line (an unset variable in a script gives an empty path).")
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    if not out:
        raise AppError("No images to inspect were given.", "Give image files or folders that contain images.")
    return out


def _kind(config: dict) -> str:
    """The project's model kind, the same the app lists (session.MODEL_KIND / TABLE_MODEL_KIND)."""
    from core.inspect import session

    return session.TABLE_MODEL_KIND if config.get("task") == "table" else session.MODEL_KIND


def _register(project, folder, config) -> int:
    return project.register_model(_kind(config), Path(folder).name, str(Path(folder).resolve()),
                                  files_sha256=config.get("files_sha256", {}), config=config)


def _model_id(project, folder) -> int | None:
    """The project's id for this model folder (registering it the first time it is used)."""
    from core.inspect import store

    if project is None:
        return None
    resolved = str(Path(folder).resolve())
    for m in project.list_models():
        if m.get("path") == resolved:
            return m["id"]
    config = store.read_config(folder)
    return _register(project, folder, config)


def _operator_threshold(project, folder, sensitivity) -> float | None:
    """The threshold an operator set for this model in the project (the inspection view's slider,
    kept in the audit trail), so the command line gives the same verdicts as the app. An explicit
    --sensitivity asks for the model's own calibration instead."""
    if project is None or sensitivity is not None:
        return None
    from core.inspect import session

    model = session.sync_model(project, project.get_model(_model_id(project, folder)))
    threshold = session.current_threshold(project, model)
    return None if threshold == session.calibrated_threshold(model) else threshold


def _apply_threshold(config: dict, params: dict) -> str:
    """Put the operator's threshold (see _operator_threshold) into a loaded model's config."""
    if params.get("threshold") is None:
        return "model"
    config["calibration"] = {**config["calibration"], "threshold": float(params["threshold"])}
    config["sensitivity"] = 0.5
    return "project"


# F1 this far below the best any threshold gets points the user to calibrating on labelled images.
BEST_F1_HINT_GAP = 0.05


# -- jobs --------------------------------------------------------------------------------------------

def eval_job(params, ctx):
    from core.inspect.evaluate import evaluate
    from core.inspect.score import Inspector

    insp = Inspector.load(params["model"], params.get("device", "auto"))
    if params.get("sensitivity") is not None:
        insp.config["sensitivity"] = float(params["sensitivity"])
    source = _apply_threshold(insp.config, params)
    ctx.progress(0, 1, "scoring labelled images")
    res = evaluate(insp, params["data"])
    res["threshold_source"] = source
    res["calibration_method"] = insp.calibration.get("method")
    items, scores = res.pop("_items"), res.pop("_scores")
    from core.inspect.score import normalised

    norm = normalised(scores, insp.calibration, insp.sensitivity)
    res["_rows"] = [{"item_path": str(i.path), "score": float(s), "normalized_score": float(n),
                     "verdict": "FAIL" if n >= 0.5 else "PASS", "label": i.label}
                    for i, s, n in zip(items, scores, norm)]
    ctx.metrics.update({k: res[k] for k in ("image_auroc", "pixel_auroc", "f1", "pass_rate_good",
                                            "catch_rate_defect") if k in res})
    ctx.progress(1, 1, "done")
    return res


def run_job(params, ctx):
    from core.inspect.score import Inspector, effective_threshold, heatmap_overlay

    insp = Inspector.load(params["model"], params.get("device", "auto"))
    source = _apply_threshold(insp.config, params)
    # The threshold the verdicts use (moved by --sensitivity): the heat maps are coloured by it too.
    sensitivity = insp.sensitivity if params.get("sensitivity") is None else float(params["sensitivity"])
    judged = {**insp.calibration, "threshold": effective_threshold(insp.calibration, sensitivity)}
    paths = _expand(params["paths"])
    want_maps = bool(params.get("heatmaps")) or ctx.project is not None
    rows, maps, skipped = insp.inspect_paths(
        paths, params.get("sensitivity"), keep_maps=want_maps,
        progress=lambda i, n: ctx.progress(i, n, f"inspected {i}/{n}"), check_cancelled=ctx.check_cancelled)
    if params.get("heatmaps"):
        out = Path(params["heatmaps"])
        used = set()
        for row in rows:
            stem = Path(row["path"]).stem
            name, k = f"{stem}_heatmap.png", 1
            while name in used:
                k += 1
                name = f"{stem}_{k}_heatmap.png"
            used.add(name)
            row["heatmap"] = str(heatmap_overlay(row["path"], maps[row["path"]], judged, out / name))
    ctx.metrics.update({"images": len(rows), "fail": sum(r["verdict"] == "FAIL" for r in rows),
                        "skipped": len(skipped)})
    return {"results": rows, "skipped": [{"path": p, "reason": r} for p, r in skipped],
            "threshold": judged["threshold"], "threshold_source": source,
            "sensitivity": sensitivity, "maps": insp.maps_in_use(), "score_maps": insp.score_maps(),
            "_maps": maps,
            "_calibration": judged}


def _store_image_results(project, run_id, model_folder, rows, maps, calibration, kind_params, used):
    """Per-item rows (+ heat maps as generated images) into the project; `used`: the anomaly maps
    the scores were made with."""
    import io

    from PIL import Image

    from core.inspect.score import heatmap_overlay

    model_id = _model_id(project, model_folder)
    records = []
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            heat_id = None
            path = row.get("path") or row.get("item_path")
            if maps is not None and path in maps:
                png = row.get("heatmap") or heatmap_overlay(path, maps[path], calibration, Path(tmp) / "h.png")
                data = Path(png).read_bytes()
                heat_id = project.add_image(data, f"{Path(path).stem} heat map", origin="generated",
                                            params={"kind": "inspection_heatmap", "source": str(path),
                                                    "model": str(Path(model_folder).resolve()),
                                                    "score": row["score"], "verdict": row["verdict"],
                                                    "threshold": calibration["threshold"], **kind_params})
            records.append({"model_id": model_id, "item_path": str(path), "image_id": None,
                            "score": row["score"], "normalized_score": row["normalized_score"],
                            "verdict": row["verdict"], "heatmap_image_id": heat_id,
                            "label": row.get("label"), "meta": {**{k: v for k, v in row.items()
                                                                   if k in ("width", "height")}, "maps": used}})
    project.add_inspection_results(run_id, records)


# -- commands ----------------------------------------------------------------------------------------

def main(args) -> int:
    cmd = args.inspect_command
    project = _open_project(args)
    try:
        return _COMMANDS[cmd](args, project)
    finally:
        if project is not None:
            project.close()


def _train(args, project) -> int:
    from core.inspect import train

    arch = {k: v for k, v in (("latent", args.latent), ("width", args.width), ("depth", args.depth)) if v}
    params = {"data": str(args.data), "out": str(args.out), "image_size": args.image_size, "epochs": args.epochs,
              "time_budget": args.time_budget, "steps": args.steps, "seed": args.seed, "device": args.device,
              "patch": args.patch, "batch": args.batch, "lr": args.lr, "beta": args.beta, "arch": arch,
              "channels": 3 if args.colour else 1, "normalise": args.normalise, "flips": not args.no_flips,
              "rot90": args.rot90, "sensitivity": args.sensitivity, "baseline": args.baseline,
              "part_type": args.part_type,  # the two flags below override what it sets
              "context": False if args.no_context else None,
              "context_features": True if args.context_features else None,
              "views": not args.one_view, "resume": not args.no_resume}
    if not 0 <= args.sensitivity <= 1:
        raise AppError(f"Sensitivity {args.sensitivity} is outside 0..1.", "Use a value between 0 and 1.")
    handle = _run_job(train.run, params, "inspect.train", "Train inspector", project)
    res = dict(handle.result)
    config = res.pop("config")
    if project is not None:
        res["model_id"] = _register(project, args.out, config)
        res["run_id"] = handle.run_id
    # Skipped files and left-out images were printed on stderr as the job logged them.
    res["skipped"] = [{"path": p, "reason": r} for p, r in res["skipped"]]
    res["left_out_of_threshold"] = config["calibration"].get("left_out_images", [])
    _emit(args, res, [f"model saved to {res['model']} ({res['steps']} steps, {res['train_seconds']} s, "
                      f"{res['images']} good images, threshold {res['threshold']:.4g})"])
    return 0


def _eval(args, project) -> int:
    handle = _run_job(eval_job, {"model": str(args.model), "data": str(args.data), "device": args.device,
                                 "sensitivity": args.sensitivity,
                                 "threshold": _operator_threshold(project, args.model, args.sensitivity)},
                      "inspect.eval", "Evaluate inspector", project)
    res = dict(handle.result)
    rows = res.pop("_rows")
    if project is not None:
        from core.inspect import store

        _store_image_results(project, handle.run_id, args.model,
                             [{**r, "path": r["item_path"]} for r in rows], None,
                             {**store.read_config(args.model)["calibration"], "threshold": res["threshold"]}, {},
                             res["maps"])
        res["run_id"] = handle.run_id
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"image AUROC {fmt(res['image_auroc'])} · pixel AUROC {fmt(res['pixel_auroc'])} · "
             f"AUPRO {fmt(res.get('aupro'))} · F1 {fmt(res['f1'])}",
             f"threshold {res['threshold']:.4g} · good passed {fmt(res['pass_rate_good'])} · "
             f"defects caught {fmt(res['catch_rate_defect'])}"]
    if res["f1_max"] is not None:
        lines.append(f"best F1 on these images {fmt(res['f1_max'])}, at threshold {res['f1_max_threshold']:.4g}")
        if res["calibration_method"] == "good_holdout" and res["f1_max"] - res["f1"] >= BEST_F1_HINT_GAP:
            lines.append(f"the threshold was set from good images only; 'lienzo inspect calibrate {args.model} "
                         f"DATA' sets it where F1 is best on labelled images (use other images than these "
                         "to measure the result)")
    for t, d in res["per_defect"].items():
        lines.append(f"  {t}: {d['count']} images, caught {fmt(d['catch_rate'])}, image AUROC {fmt(d['image_auroc'])}")
    _emit(args, res, lines)
    return 0


def _run(args, project) -> int:
    params = {"model": str(args.model), "paths": [str(p) for p in args.paths], "heatmaps": args.heatmaps,
              "device": args.device, "sensitivity": args.sensitivity,
              "threshold": _operator_threshold(project, args.model, args.sensitivity)}
    handle = _run_job(run_job, params, "inspect.run", "Inspect images", project)
    res = dict(handle.result)
    maps, calibration = res.pop("_maps"), res.pop("_calibration")
    if project is not None:
        _store_image_results(project, handle.run_id, args.model, res["results"], maps, calibration, {}, res["maps"])
        res["run_id"] = handle.run_id
    for s in res["skipped"]:
        print(f"skipped {s['path']}: {s['reason']}", file=sys.stderr)
    _emit(args, res, [f"{r['verdict']}  {r['normalized_score']:.3f}  {r['path']}" for r in res["results"]])
    return 0


def _calibrate(args, project) -> int:
    from core.inspect import data as D
    from core.inspect import mapchoice
    from core.inspect.evaluate import eval_items, load_labelled
    from core.inspect.score import Inspector

    insp = Inspector.load(args.model, args.device)
    x, items, masks, has_masks, skipped, views = load_labelled(insp, eval_items(D.scan(args.data)))
    for path, why in skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    labels = [0 if i.is_good else 1 for i in items]
    out = mapchoice.recalibrate(insp, x, labels, masks if has_masks else None, args.choose_maps, views=views)
    lines = []
    every = max((len(row["maps"]) for row in out.get("subsets", [])), default=0)
    for row in out.get("subsets", []):
        pixel = "" if row["pixel_auroc"] is None else f"  pixel AUROC {row['pixel_auroc']:.3f}"
        beats = "" if len(row["maps"]) == every else \
            f"  better than all maps in {row['beats_all_maps']:.0%} of resamples"
        lines.append(f"{'+'.join(row['maps']):40s} image AUROC {row['image_auroc']:.3f}{pixel}{beats}")
    if args.choose_maps:
        lines.append(f"maps chosen: {' + '.join(out['maps'])}")
        if out.get("higher_not_kept"):
            from core.inspect.maps import unsure_choice_note

            lines.append(unsure_choice_note(out["higher_not_kept"]))
    if project is not None:  # the project's copy follows; an operator's threshold on the old scale lapses
        from core.inspect import session

        out["model_id"] = session.sync_model(project, project.get_model(_model_id(project, args.model)))["id"]
    _emit(args, out, lines + [f"threshold set to {out['threshold']:.4g} ({out['method']})"])
    return 0


def _train_table(args, project) -> int:
    from core.inspect import tabular

    params = {"csv": str(args.csv), "out": str(args.out), "label_column": args.label_column or "label",
              "label_column_given": args.label_column is not None, "epochs": args.epochs,
              "time_budget": args.time_budget, "seed": args.seed, "device": args.device,
              "sensitivity": args.sensitivity}
    handle = _run_job(tabular.train_job, params, "inspect.train_table", "Train table inspector", project)
    res = dict(handle.result)
    if project is not None:
        from core.inspect import store

        res["model_id"] = _register(project, args.out, store.read_config(args.out))
        res["run_id"] = handle.run_id
    for w in res["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    _emit(args, res, [f"model saved to {res['model']} ({res['rows']} normal rows, "
                      f"{res['left_out_anomalies']} labelled anomalies left out)"])
    return 0


def eval_table_job(params, ctx):
    from core.inspect import tabular

    insp = tabular.TableInspector.load(params["model"])
    source = _apply_threshold(insp.config, params)
    header, rows = tabular.read_csv(params["csv"])
    feats, rows, labels = tabular.split_label(header, rows, params["label_column"], required=params["need_labels"])
    scores, norm, warnings = insp.score_rows(feats, rows)
    res = {"threshold": insp.config["calibration"]["threshold"], "threshold_source": source,
           "warnings": warnings}
    if labels is not None:
        res.update(tabular.table_metrics(scores, norm, labels))
        ctx.metrics.update({"roc_auc": res["roc_auc"], "f1": res["f1"]})
    res["_rows"] = [{"item_path": f"{params['csv']}#row{i + 2}", "score": float(s), "normalized_score": float(n),
                     "verdict": "FAIL" if n >= 0.5 else "PASS",
                     "label": None if labels is None else str(int(labels[i]))}
                    for i, (s, n) in enumerate(zip(scores, norm))]
    return res


def _table_common(args, project, need_labels: bool):
    handle = _run_job(eval_table_job, {"model": str(args.model), "csv": str(args.csv),
                                       "label_column": args.label_column, "need_labels": need_labels,
                                       "threshold": _operator_threshold(project, args.model, None)},
                      "inspect.eval_table" if need_labels else "inspect.run_table", "Table inspection", project)
    res = dict(handle.result)
    rows = res.pop("_rows")
    if project is not None:
        model_id = _model_id(project, args.model)
        project.add_inspection_results(handle.run_id, [{**r, "model_id": model_id} for r in rows])
        res["run_id"] = handle.run_id
    for w in res["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return res, rows


def _eval_table(args, project) -> int:
    res, _ = _table_common(args, project, True)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    _emit(args, res, [f"ROC-AUC {fmt(res['roc_auc'])} · F1 {fmt(res['f1'])} · normal passed "
                      f"{fmt(res['pass_rate_normal'])} · anomalies caught {fmt(res['catch_rate_anomaly'])}"])
    return 0


def _run_table(args, project) -> int:
    res, rows = _table_common(args, project, False)
    res["results"] = [{"row": i + 2, "score": r["score"], "normalized_score": r["normalized_score"],
                       "verdict": r["verdict"]} for i, r in enumerate(rows)]
    _emit(args, res, [f"row {r['row']}: {r['verdict']}  {r['normalized_score']:.3f}" for r in res["results"]])
    return 0


_COMMANDS = {"train": _train, "eval": _eval, "run": _run, "calibrate": _calibrate,
             "train-table": _train_table, "eval-table": _eval_table, "run-table": _run_table}
