"""The inspection workflow on top of the engine, as the desktop view drives it (no Qt here).

Data sets live in the project (copied images or files referenced in place, with split and label);
training materialises one into an MVTec-style folder, runs the engine's training job with live
previews (loss history, reconstructions of a few samples from the resume checkpoints) and registers
the model; inspection scores images in chunks and stores every result (score, verdict, heat map,
reconstruction) in the project as it goes, so a crash loses nothing already computed. Thresholds
are moved without touching the model: verdicts are recomputed from the stored scores, and every
change is an audit row (the latest one is the threshold in force for that model).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from core import paths
from core.errors import AppError
from core.inspect import data as D
from core.inspect.maps import available_maps, summed_maps
from core.inspect.metrics import best_f1, counts_at_each_threshold

MODEL_KIND = "inspector"
TABLE_MODEL_KIND = "inspector-table"
DEFECT = "defect"

# Presets a QA operator picks from; the advanced settings override single keys.
PRESETS = {
    "fast": {"image_size": 128, "time_budget": 60, "latent": 16, "flips": True, "rot90": False,
             "patch": 64, "batch": 16},
    "balanced": {"image_size": 256, "time_budget": 300, "latent": 16, "flips": True, "rot90": False,
                 "patch": 64, "batch": 32},
    "thorough": {"image_size": 256, "time_budget": 900, "latent": 16, "flips": True, "rot90": False,
                 "patch": 64, "batch": 32},
}
PRESET_TEXT = {
    "fast": "About a minute at 128 px: a first look, or a quick retrain.",
    "balanced": "About five minutes at 256 px: good for most parts.",
    # Not "the best": models keep gaining from training (four times a 2-core CPU's 10 minutes lifted
    # image AUROC on circuit boards from 0.82-0.92 to 0.91-0.95, on tiles 0.895 to 0.939; bench/README.md).
    "thorough": "About fifteen minutes at 256 px. Longer training ranks parts better still "
                "(circuit boards, textured tiles): set the time under Advanced settings.",
}
TABLE_PRESETS = {"fast": {"epochs": 60, "time_budget": 20}, "balanced": {"epochs": 200, "time_budget": 120},
                 "thorough": {"epochs": 600, "time_budget": 600}}


# == data sets ======================================================================================

def _image_info(path: Path) -> tuple[int, int]:
    """Open the header and verify the data; raises AppError with the reason for a bad file."""
    from PIL import Image

    if path.stat().st_size == 0:
        raise AppError(f"'{path.name}' is an empty file (0 bytes).", "")
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
        return size
    except Exception as exc:  # PIL raises many types for damaged files
        raise AppError(f"not a readable image ({exc})", "") from None


def import_folder(project, root, name: str | None = None, storage: str = "copied",
                  progress=None, check_cancelled=None) -> dict:
    """Import an MVTec-layout or good/defect folder as a data set. Bad files are skipped and
    listed with their reason; items are committed in chunks (an interrupted import keeps them)."""
    root = Path(root)
    ds = D.scan(root)
    entries = [("train", i) for i in ds.train] + [("test", i) for i in ds.test]
    if not entries:
        raise AppError(f"No images were found in '{root}'.",
                       "Choose a folder with train/good and test/<type> (MVTec layout), or with good/ "
                       "and defect sub-folders, or with the images themselves.")
    dataset_id = project.create_dataset(name or root.name, kind="images", storage=storage,
                                        source_path=str(root), meta={"layout": ds.layout})
    skipped, added, chunk = [], 0, []

    def flush():
        nonlocal added
        if chunk:
            project.add_dataset_items(dataset_id, chunk)
            added += len(chunk)
            chunk.clear()

    for n, (split, item) in enumerate(entries):
        if check_cancelled:
            check_cancelled()
        if progress:
            progress(n, len(entries), f"importing {item.path.name}")
        rel = str(item.path.relative_to(root)) if item.path.is_relative_to(root) else str(item.path)
        try:
            width, height = _image_info(item.path)
            row = {"split": split, "label": item.label, "meta": {"name": item.path.name, "source": rel,
                                                                 "width": width, "height": height}}
            if storage == "copied":
                row["image_id"] = project.add_image(item.path.read_bytes(), item.path.name, origin="dataset",
                                                    source_path=str(item.path))
                if item.mask is not None:
                    try:
                        row["mask_image_id"] = project.add_image(item.mask.read_bytes(), item.mask.name,
                                                                 origin="dataset")
                    except AppError:
                        pass  # a bad mask only loses the pixel metric for this item
            else:
                from core.project import file_fingerprint

                size, sha = file_fingerprint(item.path)
                row.update(path=str(item.path), size=size, sha256=sha,
                           mask_path=str(item.mask) if item.mask else None)
        except (AppError, OSError) as exc:
            reason = exc.message if isinstance(exc, AppError) else (exc.strerror or str(exc))
            skipped.append((str(item.path), reason.removeprefix(f"{item.path.name}: ")))
            continue
        chunk.append(row)
        if len(chunk) >= 50:
            flush()
    flush()
    if not added:
        project.delete_dataset(dataset_id)
        raise AppError(f"None of the {len(entries)} images in '{root}' could be read.",
                       "The files may be damaged or not images.")
    meta = {"layout": ds.layout, "skipped": [list(s) for s in skipped]}
    with project.transaction():
        project.db["datasets"].update(dataset_id, {"meta": json.dumps(meta)})
    project.audit("inspect.dataset.import", {"dataset_id": dataset_id, "name": name or root.name,
                                             "source": str(root), "storage": storage, "items": added,
                                             "skipped": len(skipped)})
    if progress:
        progress(len(entries), len(entries), f"imported {added} image(s), skipped {len(skipped)}")
    return {"dataset_id": dataset_id, "items": added, "skipped": skipped}


def import_job(params: dict, ctx) -> dict:
    if params.get("csv"):
        return import_csv(ctx.project, params["csv"], params.get("name"), params.get("label_column"))
    return import_folder(ctx.project, params["root"], params.get("name"), params.get("storage", "copied"),
                         progress=ctx.progress, check_cancelled=ctx.check_cancelled)


def import_csv(project, path, name: str | None = None, label_column: str | None = None) -> dict:
    """A CSV as a table data set, referenced in place (size + sha256 notice later changes)."""
    from core.inspect import tabular as T

    header, rows = T.read_csv(path)
    label_column = label_column or ("label" if "label" in header else None)
    labels = None
    if label_column:
        _, _, labels = T.split_label(header, rows, label_column, required=True)
    meta = {"columns": header, "rows": len(rows), "label_column": label_column,
            "anomalies": int(labels.sum()) if labels is not None else None}
    dataset_id = project.create_dataset(name or Path(path).stem, kind="table", storage="referenced",
                                        source_path=str(Path(path).resolve()), meta=meta)
    project.audit("inspect.dataset.import", {"dataset_id": dataset_id, "source": str(path), "rows": len(rows),
                                             "kind": "table"})
    return {"dataset_id": dataset_id, "items": len(rows), "skipped": []}


def dataset_summary(project, dataset_id: int) -> dict:
    """Counts per split and label, image sizes, and the files skipped at import."""
    ds = project.get_dataset(dataset_id)
    out = {"name": ds["name"], "kind": ds["kind"], "storage": ds["storage"], "source": ds["source_path"],
           "skipped": (ds.get("meta") or {}).get("skipped", []), "counts": {}, "sizes": {}, "total": 0}
    if ds["kind"] == "table":
        out["total"] = (ds.get("meta") or {}).get("rows", 0)
        return out
    for it in project.dataset_items(dataset_id):
        key = (it["split"] or "", "good" if it["label"] == "good" else "defect")
        out["counts"][key] = out["counts"].get(key, 0) + 1
        m = it.get("meta") or {}
        size = f"{m.get('width', '?')}×{m.get('height', '?')}"
        out["sizes"][size] = out["sizes"].get(size, 0) + 1
        out["total"] += 1
    return out


def set_item_label(project, item_id: int, label: str, split: str | None = None) -> None:
    with project.lock:
        old = project.db.execute("SELECT label, split, dataset_id FROM dataset_items WHERE id = ?",
                                 [item_id]).fetchone()
    if old is None:
        raise AppError(f"Data set item {item_id} does not exist.", "Reload the data set.")
    fields = {"label": label}
    if split is not None:
        fields["split"] = split
    with project.transaction():
        project.update_dataset_item(item_id, **fields)
        project.audit("inspect.label", {"dataset_id": old[2], "item_id": item_id, "old": old[0], "new": label,
                                        "old_split": old[1], "new_split": split or old[1]})


def item_bytes(project, item: dict) -> bytes:
    if item.get("image_id"):
        return project.image_bytes(item["image_id"])
    try:
        return Path(item["path"]).read_bytes()
    except OSError as exc:
        raise AppError(f"'{item['path']}' cannot be read ({exc.strerror or exc}).",
                       "The referenced file was moved or deleted; import the data set again.") from None


def materialize(project, dataset_id: int, dest) -> Path:
    """Write the data set as an MVTec-style folder the engine reads: train/good holds the items
    to learn from (split train, label good), everything else goes to test/<label>."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    for it in project.dataset_items(dataset_id):
        label = it["label"] or "good"
        name = (it.get("meta") or {}).get("name") or Path(it.get("path") or f"item{it['id']}.png").name
        fname = f"{it['id']}_{name}"
        if it["split"] == "train" and label == "good":
            target = dest / "train" / "good" / fname
        else:
            target = dest / "test" / re.sub(r"[^\w.-]", "_", label) / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        if it.get("path"):
            try:
                os.symlink(it["path"], target)
            except OSError:
                shutil.copyfile(it["path"], target)
        else:
            target.write_bytes(project.image_bytes(it["image_id"]))
        mask = None
        if it.get("mask_image_id"):
            mask = project.image_bytes(it["mask_image_id"])
        elif it.get("mask_path") and Path(it["mask_path"]).is_file():
            mask = Path(it["mask_path"]).read_bytes()
        if mask is not None and label != "good":
            mpath = dest / "ground_truth" / target.parent.name / f"{Path(fname).stem}_mask.png"
            mpath.parent.mkdir(parents=True, exist_ok=True)
            mpath.write_bytes(mask)
    return dest


# == training =======================================================================================

def train_params(preset: str, overrides: dict | None = None) -> dict:
    if preset not in PRESETS:
        raise AppError(f"Unknown preset '{preset}'.", "Use fast, balanced or thorough.")
    p = {**PRESETS[preset], **{k: v for k, v in (overrides or {}).items() if v is not None}}
    if p.get("epochs"):
        p["time_budget"] = None
    p["patch"] = min(int(p["patch"]), int(p["image_size"]))
    return p


def to_u8(x: np.ndarray) -> np.ndarray:
    """A preprocessed channel (about [-2, 2]) as 8-bit grey for display."""
    return (np.clip(x / 4.0 + 0.5, 0, 1) * 255).astype(np.uint8)


class _TrainWatch:
    """Stands in for the job context during training: forwards everything, and adds to each
    progress report the loss history and reconstructions of a few training images, which the
    training loop asks for now and then through `preview_model` with its live network."""

    def __init__(self, ctx, samples, started: float):
        self._ctx, self._samples = ctx, samples
        self._losses: list[tuple[int, float]] = []
        self._recons = None
        self._started = started
        self._last = 0.0

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def preview_model(self, net) -> None:
        import torch

        if self._samples is None:
            return
        was_training = net.training
        net.eval()
        try:
            with torch.inference_mode():
                device = next(net.parameters()).device
                recon = net(self._samples.to(device))[0].float().cpu().numpy()
        finally:
            net.train(was_training)
        self._recons = [(to_u8(x[0]), to_u8(r[0])) for x, r in zip(self._samples.numpy(), recon)]

    def progress(self, step, total, message="", preview=None):
        given = preview if isinstance(preview, dict) else {}
        if given.get("loss") is not None:
            self._losses.append((int(step), float(given["loss"])))
        now = time.monotonic()
        if now - self._last < 0.1 and step and step != total:
            self._ctx.progress(step, total, message)  # the context throttles; no preview to build
            return
        self._last = now
        losses = self._losses if len(self._losses) <= 2000 else self._losses[:: len(self._losses) // 2000 + 1]
        self._ctx.progress(step, total, message, preview={
            "losses": list(losses), "recons": self._recons,
            "eta": given.get("eta"), "elapsed": time.monotonic() - self._started})


def _work_dir(kind: str) -> Path:
    base = paths.data_dir() / "inspect" / kind
    base.mkdir(parents=True, exist_ok=True)
    return base


def _fresh_folder(base: Path) -> Path:
    """A model folder no other model uses (a second training with the same name gets a suffix),
    so a registered model's files are never overwritten."""
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def new_training(dataset: dict, preset: str, overrides: dict | None = None, name: str | None = None) -> dict:
    """Job params for a training, with its model folder chosen now: the run row then records
    where the resume checkpoint lives, so an interrupted training can go on from it."""
    name = name or f"{dataset['name']} {preset} {time.strftime('%Y%m%d-%H%M%S')}"
    out = _fresh_folder(paths.models_dir() / "inspector" / re.sub(r"[^\w-]", "_", name))
    return {"dataset_id": dataset["id"], "preset": preset, "overrides": dict(overrides or {}), "name": name,
            "out": str(out)}


def last_part_type(project, dataset_id: int | None) -> str | None:
    """The part type of the newest model trained on this data set: retraining for the same line
    starts from what the operator chose before."""
    if dataset_id is None:
        return None
    for model in project.list_models(MODEL_KIND):  # newest first
        config = model.get("config") or {}
        if config.get("dataset_id") == dataset_id:
            return (config.get("training") or {}).get("part_type")
    return None


def resumable_training(project) -> dict | None:
    """The latest image training that stopped early (crash, cancel, failure) and left a resume
    checkpoint behind, as {run_id, params, step}; None when there is none."""
    for run in project.list_runs("inspect.train"):
        if run["status"] == "done":
            return None
        out = (run.get("params") or {}).get("out")
        meta = Path(out) / "checkpoint" / "checkpoint.json" if out else None
        if run["status"] in ("interrupted", "cancelled", "failed") and meta and meta.is_file():
            try:
                step = int(json.loads(meta.read_text()).get("step", 0))
            except (OSError, ValueError):
                continue
            return {"run_id": run["id"], "params": run["params"], "step": step}
    return None


def train_job(params: dict, ctx) -> dict:
    """Job: params dataset_id, preset, overrides, name. Registers the model in the project with
    its metrics on the labelled test items (when there are any)."""
    import torch

    from core.inspect import evaluate as E
    from core.inspect import model as M
    from core.inspect import train as T
    from core.inspect.score import Inspector

    project = ctx.project
    ds = project.get_dataset(int(params["dataset_id"]))
    p = train_params(params.get("preset", "fast"), params.get("overrides"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = params.get("name") or f"{ds['name']} {params.get('preset', 'fast')} {stamp}"
    data_dir = materialize(project, ds["id"], _work_dir("data") / f"ds{ds['id']}-{stamp}")
    out = Path(params.get("out") or _fresh_folder(paths.models_dir() / "inspector" / re.sub(r"[^\w-]", "_", name)))
    out.parent.mkdir(parents=True, exist_ok=True)
    engine = {"data": str(data_dir), "out": str(out), "image_size": p["image_size"], "patch": p["patch"],
              "batch": p["batch"], "epochs": p.get("epochs"), "time_budget": p.get("time_budget"),
              "flips": p["flips"], "rot90": p["rot90"], "arch": {"latent": int(p["latent"])},
              "seed": int(p.get("seed", 0)), "part_type": p.get("part_type") or "general",
              # Frequent checkpoints: little is lost when the app or the machine stops.
              "checkpoint_every_s": float(p.get("checkpoint_every_s")
                                          or min(10.0, max(2.0, float(p.get("time_budget") or 60) / 15)))}
    started = time.monotonic()
    scan = D.scan(data_dir)
    D.require_good(scan.train, scan.root)
    prep = {"size": p["image_size"], "channels": 1, "normalise": "percentile"}
    arrays, _, _ = D.load_batch([i.path for i in scan.train[:3]], prep)
    samples = torch.from_numpy(np.stack([a for a in arrays if a is not None]))
    arch = {**M.DEFAULT_ARCH, "channels": 1, **engine["arch"]}
    result = T.run(engine, _TrainWatch(ctx, samples, started))
    ctx.progress(1, 1, "evaluating on the labelled test images")
    metrics = {}
    if scan.test and any(not i.is_good for i in scan.test):
        insp = Inspector.load(out)
        ev = E.evaluate(insp, data_dir, with_aupro=False)
        metrics = {k: ev.get(k) for k in ("image_auroc", "pixel_auroc", "f1", "pass_rate_good",
                                          "catch_rate_defect", "n_images", "n_good", "n_defect")}
        metrics["per_defect"] = ev.get("per_defect")
    config = result["config"]
    model_id = project.register_model(MODEL_KIND, name, out, files_sha256=config.get("files_sha256"), config={
        "dataset_id": ds["id"], "dataset": ds["name"], "preset": params.get("preset", "fast"), "settings": p,
        "calibration": config["calibration"], "training": config["training"], "metrics": metrics,
        "run_id": ctx.run_id, "task": "image", **({"views": config["views"]} if config.get("views") else {})})
    project.audit("inspect.train", {"model_id": model_id, "model": name, "dataset_id": ds["id"],
                                    "dataset": ds["name"], "preset": params.get("preset", "fast"),
                                    "settings": p, "steps": result["steps"], "metrics": metrics,
                                    "threshold": config["calibration"]["threshold"]})
    ctx.metrics.update({k: v for k, v in metrics.items() if k != "per_defect"})
    shutil.rmtree(data_dir, ignore_errors=True)
    return {"model_id": model_id, "name": name, "metrics": metrics, "steps": result["steps"],
            "threshold": config["calibration"]["threshold"], "train_seconds": result["train_seconds"],
            "views": (config.get("views") or {}).get("ranges", []), "part_type": config["training"]["part_type"]}


# == inspection =====================================================================================

def _png(arr_u8: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr_u8).save(buf, format="PNG")
    return buf.getvalue()


def _decode(data: bytes, channels: int) -> np.ndarray:
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as exc:
        raise AppError(f"not a readable image ({exc})", "") from None
    return D.pil_to_array(im, channels)


def collect_paths(paths_or_folders) -> list[Path]:
    out = []
    for p in paths_or_folders:
        p = Path(p)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in D.IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
    return out


def inspect_items(project, params: dict) -> list[dict]:
    """What to inspect: {'dataset_id', 'split'} or {'paths'}; each item name, label, source."""
    if params.get("dataset_id"):
        items = project.dataset_items(int(params["dataset_id"]), split=params.get("split") or None)
        return [{"name": (it.get("meta") or {}).get("name") or Path(it.get("path") or "").name,
                 "path": it.get("path") or (it.get("meta") or {}).get("source"), "image_id": it.get("image_id"),
                 "label": it.get("label"), "dataset_item_id": it["id"], "src": it} for it in items]
    files = collect_paths(params.get("paths") or [])
    if not files:
        raise AppError("There are no images to inspect.", "Choose a folder with images, or drop image files.")
    return [{"name": f.name, "path": str(f), "image_id": None, "label": None, "dataset_item_id": None,
             "src": {"path": str(f)}} for f in files]


def inspect_job(params: dict, ctx) -> dict:
    """Job: params model_id and the items (see inspect_items). Each chunk's results are stored
    in the project as soon as they are scored."""
    import torch

    from core.inspect.score import Inspector

    project = ctx.project
    model = sync_model(project, project.get_model(int(params["model_id"])))
    insp = Inspector.load(model["path"])
    threshold = current_threshold(project, model)
    calibration = insp.calibration
    used = insp.maps_in_use()
    items = inspect_items(project, params)
    chans = int(insp.prep.get("channels", 1))
    run_id = ctx.run_id
    if run_id is None:
        run_id = project.start_run("inspect", {"model_id": model["id"]}, status="running")
    done, fails, skipped = 0, 0, []
    chunk_size = max(1, int(params.get("chunk", 16)))
    for start in range(0, len(items), chunk_size):
        ctx.check_cancelled()
        part = items[start:start + chunk_size]
        arrays, ok = [], []
        for it in part:
            try:
                raw = _decode(item_bytes(project, it["src"]), chans)
                arrays.append(D.preprocess(raw, insp.prep))
                ok.append((it, raw.shape[:2]))
            except AppError as exc:
                skipped.append((it["path"] or it["name"], exc.message))
        if not ok:
            continue
        x = torch.from_numpy(np.stack(arrays))
        scores, maps = insp.score_tensor(x, keep_maps=True, views=insp.views_of([s for _, s in ok]))
        with torch.inference_mode():
            recon = insp.net(x.to(insp.device))[0].float().cpu().numpy()
        norm = normalized_scores(scores.numpy(), calibration, threshold)
        rows = []
        with project.transaction():
            for j, (it, shape) in enumerate(ok):
                amap = maps[j].numpy()
                scale = float(max(amap.max(), 1e-12))
                map_id = project.add_image(_png((np.clip(amap / scale, 0, 1) * 255).astype(np.uint8)),
                                           f"heatmap {it['name']}", origin="dataset")
                recon_id = project.add_image(_png(to_u8(recon[j][0])), f"reconstruction {it['name']}",
                                             origin="dataset")
                verdict = "FAIL" if scores[j] >= threshold else "PASS"
                fails += verdict == "FAIL"
                rows.append({"model_id": model["id"], "item_path": it["path"] or it["name"],
                             "image_id": it["image_id"], "score": float(scores[j]),
                             "normalized_score": float(norm[j]), "verdict": verdict,
                             "heatmap_image_id": map_id, "label": it["label"],
                             "meta": {"name": it["name"], "map_scale": scale, "recon_image_id": recon_id,
                                      "dataset_item_id": it["dataset_item_id"], "height": shape[0],
                                      "width": shape[1], "threshold": threshold, "maps": used}})
            project.add_inspection_results(run_id, rows)
        done += len(ok)
        ctx.progress(min(start + chunk_size, len(items)), len(items),
                     f"{done} inspected, {fails} FAIL", preview={"run_id": run_id, "done": done})
    if not done:
        raise AppError("None of the images could be read.", "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:5]))
    ctx.metrics.update({"inspected": done, "fail": fails, "threshold": threshold, "skipped": len(skipped)})
    return {"run_id": run_id, "model_id": model["id"], "inspected": done, "fail": fails, "skipped": skipped}


def calibrate_job(params: dict, ctx) -> dict:
    """Job: params model_id, dataset_id (split optional), choose_maps. The F1-optimal threshold on
    that data set's labelled images and, with choose_maps, first the anomaly maps to sum
    (core.inspect.mapchoice), written to the model's folder; the project's copy follows, audited
    as a recalibration. Masks in the data set count for the choice of maps."""
    import torch

    from core.inspect import mapchoice
    from core.inspect.score import Inspector

    project = ctx.project
    model = sync_model(project, project.get_model(int(params["model_id"])))
    insp = Inspector.load(model["path"])
    items = [it for it in inspect_items(project, params) if label_is_defect(it["label"]) is not None]
    if not items:
        raise AppError("The data set has no labelled images to calibrate on.",
                       "Label some images good and some as defects (step 1 · Data), then calibrate.")
    size, chans = int(insp.prep["size"]), int(insp.prep.get("channels", 1))
    arrays, shapes, labels, masks, skipped = [], [], [], [], []
    for k, it in enumerate(items):
        if k % 16 == 0:
            ctx.check_cancelled()
            ctx.progress(k, len(items), "reading the labelled images")
        try:
            raw = _decode(item_bytes(project, it["src"]), chans)
            arrays.append(D.preprocess(raw, insp.prep))
        except AppError as exc:
            skipped.append((it["path"] or it["name"], exc.message))
            continue
        shapes.append(raw.shape[:2])
        labels.append(int(label_is_defect(it["label"])))
        mask_id = (it["src"] or {}).get("mask_image_id")
        masks.append(D.read_mask(io.BytesIO(project.image_bytes(mask_id)), (size, size)) if mask_id
                     else np.zeros((size, size), dtype=bool))
    if not arrays:
        raise AppError("None of the labelled images could be read.",
                       "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:5]))
    choose = bool(params.get("choose_maps"))
    ctx.progress(len(items), len(items), "choosing the maps" if choose else "setting the threshold")
    has_masks = any(m.any() for m, y in zip(masks, labels) if y)
    res = mapchoice.recalibrate(insp, torch.from_numpy(np.stack(arrays)), labels,
                                np.stack(masks) if has_masks else None, choose, ctx.check_cancelled,
                                insp.views_of(shapes))
    model = sync_model(project, model)
    ctx.metrics.update({"threshold": res["threshold"], "maps": res["maps"]})
    return {**res, "model_id": model["id"], "n_good": labels.count(0), "n_defect": labels.count(1),
            "skipped": skipped}


# == thresholds, verdicts, labels ===================================================================

def normalized_scores(scores, calibration: dict, threshold: float) -> np.ndarray:
    """Scores mapped so `threshold` is 0.5 (the engine's scale: good-score standard deviations)."""
    s = np.asarray(scores, dtype=np.float64)
    z = (s - threshold) / max(float(calibration.get("scale", 1.0)), 1e-12)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def verdicts(scores, threshold: float) -> list[str]:
    return ["FAIL" if s >= threshold else "PASS" for s in np.asarray(scores, dtype=np.float64)]


def counts(scores, threshold: float) -> dict:
    s = np.asarray(scores, dtype=np.float64)
    fail = int((s >= threshold).sum())
    return {"total": int(s.size), "fail": fail, "pass": int(s.size) - fail}


def model_maps(model: dict) -> tuple[list[str], list[str], list[str]]:
    """(the maps a registered model's heat map sums, the maps its part scores sum, all the maps it
    has), from its folder's config.json (the project keeps only part of it); from the project's
    copy where the folder cannot be read."""
    from core.inspect import store

    try:
        config = store.read_config(model["path"])
    except (AppError, OSError, KeyError):
        config = model.get("config") or {}
    return (*summed_maps(config), available_maps(config))


def calibrated_threshold(model: dict) -> float:
    return float(model["config"]["calibration"]["threshold"])


def current_threshold(project, model: dict) -> float:
    """The threshold in force: the latest one the operator set for this model since it was last
    recalibrated (an older one is on the old scores' scale), else the calibrated one."""
    since = max((row["id"] for row in project.audit_log("model.update")
                 if (row.get("details") or {}).get("id") == model["id"]
                 and "new_threshold" in (row.get("details") or {})), default=0)
    for row in reversed(project.audit_log("inspect.threshold")):
        if row["id"] < since:
            break
        d = row.get("details") or {}
        if d.get("model_id") == model["id"] and d.get("new") is not None:
            return float(d["new"])
    return calibrated_threshold(model)


def sync_model(project, model: dict) -> dict:
    """The project's model as its folder now is. A folder recalibrated after it was registered
    (`lienzo inspect calibrate`, perhaps with other maps chosen) scores on a new scale; the
    project's copy of its calibration (and choice of maps) follows, audited, so the app's verdicts
    and the folder's agree. A folder that cannot be read is left for loading to report."""
    from core.inspect import store

    try:
        folder = store.read_config(model["path"])
    except (AppError, OSError):
        return model
    copy = model.get("config") or {}
    calibration = folder.get("calibration")
    use = (folder.get("map") or {}).get("use")
    old_use = (copy.get("map") or {}).get("use")
    if not calibration or (calibration == copy.get("calibration") and use == old_use):
        return model
    updated = {**copy, "calibration": calibration}
    chosen = {k: v for k, v in (copy.get("map") or {}).items() if k != "use"}
    if use:
        chosen["use"] = use
    if chosen or "map" in copy:
        updated["map"] = chosen
    if project.read_only:
        return {**model, "config": updated}
    old_cal = copy.get("calibration") or {}
    project.update_model_config(model["id"], updated, details={
        "model": model["name"], "old_threshold": old_cal.get("threshold"),
        "new_threshold": calibration.get("threshold"), "method": calibration.get("method"),
        "old_maps": old_use, "maps": use})
    return project.get_model(model["id"])


def scored_before_map_change(project, model: dict, run_id: int | None, results: list | None = None) -> bool:
    """Whether inspection run `run_id` (its `results`, when already read) was scored with other
    anomaly maps than the model sums now (they were chosen anew since): its stored scores are then
    on another scale than the model's threshold, and the run must be inspected again to be judged
    by it."""
    if not run_id:
        return False
    results = project.inspection_results(run_id) if results is None else results
    used = (results[0].get("meta") or {}).get("maps") if results else None
    changes = [row for row in project.audit_log("model.update")
               if (row.get("details") or {}).get("id") == model["id"]
               and row["details"].get("maps") != row["details"].get("old_maps")]
    if used is not None:  # runs record the maps they were scored with
        chosen = (model["config"].get("map") or {}).get("use")
        if chosen is not None:
            return used != chosen
        # all maps now (no choice): stale if the run was scored with the choice that held before
        return bool(changes) and used == changes[-1]["details"].get("old_maps")
    created = project.get_run(run_id).get("created_at") or 0.0  # older runs: by the audit trail
    return bool(changes) and changes[-1]["time"] > created


def set_threshold(project, model: dict, new: float, user: str | None = None) -> float:
    old = current_threshold(project, model)
    if abs(old - new) > 1e-12:
        project.audit("inspect.threshold", {"model_id": model["id"], "model": model["name"], "old": old,
                                            "new": float(new)}, user=user)
    return old


def label_is_defect(label) -> bool | None:
    if label is None or label == "":
        return None
    return label != "good"


def threshold_stats(scores, labels, threshold: float) -> dict:
    """Histogram, ROC, confusion counts, F1 and the best F1 any threshold gets, for labelled
    results (labels: good / defect type / None)."""
    s = np.asarray(scores, dtype=np.float64)
    y = [label_is_defect(lab) for lab in labels]
    keep = np.array([v is not None for v in y], dtype=bool)
    out = {"labelled": int(keep.sum()), "auroc": None, "roc": None, "confusion": None}
    if not keep.any():
        return out
    ys, ss = np.array([bool(v) for v, k in zip(y, keep) if k]), s[keep]
    pred = ss >= threshold
    out["confusion"] = {"tp": int((pred & ys).sum()), "fp": int((pred & ~ys).sum()),
                        "fn": int((~pred & ys).sum()), "tn": int((~pred & ~ys).sum())}
    c = out["confusion"]
    out["pass_rate_good"] = c["tn"] / max(c["tn"] + c["fp"], 1) if (~ys).any() else None
    out["catch_rate_defect"] = c["tp"] / max(c["tp"] + c["fn"], 1) if ys.any() else None
    out["f1"] = 2 * c["tp"] / max(2 * c["tp"] + c["fp"] + c["fn"], 1) if ys.any() else None
    out["f1_max"], out["f1_max_threshold"] = best_f1(ys, ss)
    lo, hi = float(s.min()), float(s.max())
    if hi <= lo:
        hi = lo + 1e-6
    edges = np.linspace(lo, hi, 26)
    out["hist"] = {"edges": edges.tolist(), "good": np.histogram(ss[~ys], edges)[0].tolist(),
                   "defect": np.histogram(ss[ys], edges)[0].tolist()}
    if ys.any() and (~ys).any():
        fpr, tpr = roc_curve(ys, ss)
        out["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
        out["auroc"] = float(np.trapezoid(tpr, fpr))
    return out


def roc_curve(positive, scores) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) at every distinct score, ties handled as
    scikit-learn does (its AUROC is the area under these points); plain numpy, for the GUI thread
    (metrics.counts_at_each_threshold)."""
    _, tps, flagged = counts_at_each_threshold(positive, scores)
    fps = flagged - tps
    return (np.r_[0.0, fps / max(fps[-1], 1)], np.r_[0.0, tps / max(tps[-1], 1)])


def latest_run(project, model_id: int | None = None) -> int | None:
    for run in project.list_runs("inspect"):
        if run["status"] in ("done", "cancelled", "interrupted", "failed"):
            if model_id is None or (run.get("params") or {}).get("model_id") == model_id:
                if project.inspection_results(run["id"]):
                    return run["id"]
    return None


def confirm_good(project, result: dict, model: dict, user: str | None = None) -> dict:
    """The operator says a FAIL is in fact a good part: it joins the model's training data (split
    train, label good) for the next retrain, and the audit trail says who decided it."""
    meta = result.get("meta") or {}
    dataset_id = (model.get("config") or {}).get("dataset_id")
    item_id = meta.get("dataset_item_id")
    old_label = result.get("label")
    with project.transaction():
        if item_id:
            project.update_dataset_item(item_id, split="train", label="good")
            target = item_id
        else:
            if not dataset_id:
                raise AppError("This model has no training data set in the project to add the image to.",
                               "Train a model from a project data set first.")
            path = result.get("item_path")
            if result.get("image_id"):
                row = {"image_id": result["image_id"]}
            else:
                data = Path(path).read_bytes()
                row = {"image_id": project.add_image(data, Path(path).name, origin="dataset", source_path=path)}
            row.update(split="train", label="good", meta={"name": meta.get("name") or Path(path).name,
                                                          "source": path, "confirmed_from_run": result.get("run_id"),
                                                          "width": meta.get("width"), "height": meta.get("height")})
            target = project.add_dataset_items(dataset_id, [row])[0]
        project.db["inspection_results"].update(result["id"], {
            "label": "good", "meta": json.dumps({**meta, "confirmed_good": True, "old_label": old_label})})
        project.audit("inspect.confirm_good", {"model_id": model["id"], "result_id": result["id"],
                                               "item": result.get("item_path"), "dataset_item_id": target,
                                               "old": old_label, "new": "good", "verdict": result.get("verdict")},
                      user=user)
    return {"dataset_item_id": target}


def record_model_choice(project, old: dict | None, new: dict, user: str | None = None) -> None:
    if old is not None and old["id"] == new["id"]:
        return
    project.audit("inspect.model", {"old": old["name"] if old else None, "new": new["name"],
                                    "old_id": old["id"] if old else None, "new_id": new["id"]}, user=user)


AUDIT_ACTIONS = ("inspect.", "model.", "dataset.")


def audit_rows(project) -> list[dict]:
    """The audit rows of the inspection workflow, newest first, as (time, user, action, what, old, new)."""
    out = []
    for row in reversed(project.audit_log()):
        if not row["action"].startswith(AUDIT_ACTIONS):
            continue
        d = row.get("details") or {}
        what = d.get("model") or d.get("name") or d.get("item") or d.get("dataset") or ""
        if row["action"] == "inspect.train":
            m = d.get("metrics") or {}
            what = f"{d.get('model')} on {d.get('dataset')} ({d.get('preset')})" + (
                f", AUROC {m['image_auroc']:.3f}" if m.get("image_auroc") is not None else "")
        elif row["action"] == "inspect.report":
            what = f"{d.get('format', '').upper()} {d.get('path', '')}"
        elif row["action"] == "inspect.label":
            what = f"item {d.get('item_id')}"
        old, new = d.get("old"), d.get("new")
        if row["action"] == "model.update":  # recalibrated: the threshold moved
            old, new = d.get("old_threshold"), d.get("new_threshold")
        fmt = (lambda v: f"{v:.4g}") if row["action"] in ("inspect.threshold", "model.update") else str
        out.append({"time": row["time"], "user": row["user"], "action": row["action"], "what": str(what),
                    "old": "" if old is None else fmt(old), "new": "" if new is None else fmt(new),
                    "details": d})
    return out


# == tabular ========================================================================================

def table_rows(project, dataset_id: int):
    """(features header, rows, labels or None, label column) of a table data set."""
    from core.inspect import tabular as T
    from core.project import file_fingerprint

    ds = project.get_dataset(dataset_id)
    path = ds["source_path"]
    if ds.get("source_sha256") and Path(path).is_file() and file_fingerprint(path)[1] != ds["source_sha256"]:
        raise AppError(f"'{path}' changed since it was imported.", "Import the CSV again as a new data set.")
    header, rows = T.read_csv(path)
    label_column = (ds.get("meta") or {}).get("label_column")
    feats, rows2, labels = T.split_label(header, rows, label_column, required=False)
    return feats, rows2, labels, label_column, header, rows


def table_train_job(params: dict, ctx) -> dict:
    from core.inspect import store
    from core.inspect import tabular as T

    project = ctx.project
    ds = project.get_dataset(int(params["dataset_id"]))
    feats, rows, labels, label_column, _, _ = table_rows(project, ds["id"])
    normal = rows if labels is None else [r for r, lab in zip(rows, labels) if lab == 0]
    p = {**TABLE_PRESETS[params.get("preset", "fast")], **(params.get("overrides") or {})}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = params.get("name") or f"{ds['name']} table {stamp}"
    out = Path(params.get("out") or _fresh_folder(paths.models_dir() / "inspector" / re.sub(r"[^\w-]", "_", name)))
    watch = _TrainWatch(ctx, None, time.monotonic())
    res = T.train_rows(feats, normal, {**p, "label_column": label_column or "label"}, watch)
    saved = store.save_model(out, res["tensors"], res["config"])
    insp = T.TableInspector.load(out)
    metrics = {}
    if labels is not None:
        s, norm, _ = insp.score_rows(feats, rows)
        metrics = T.table_metrics(s, norm, labels)
    model_id = project.register_model(TABLE_MODEL_KIND, name, out, files_sha256=saved.get("files_sha256"), config={
        "dataset_id": ds["id"], "dataset": ds["name"], "calibration": saved["calibration"],
        "training": saved["training"], "metrics": metrics, "task": "table", "settings": p})
    project.audit("inspect.train", {"model_id": model_id, "model": name, "dataset_id": ds["id"], "dataset": ds["name"],
                                    "preset": params.get("preset", "fast"), "metrics": {
                                        "image_auroc": metrics.get("roc_auc"), **metrics},
                                    "threshold": saved["calibration"]["threshold"]})
    return {"model_id": model_id, "name": name, "metrics": metrics, "warnings": res["warnings"]}


def table_inspect_job(params: dict, ctx) -> dict:
    from core.inspect import tabular as T

    project = ctx.project
    model = project.get_model(int(params["model_id"]))
    insp = T.TableInspector.load(model["path"])
    feats, rows, labels, label_column, header, raw = table_rows(project, int(params["dataset_id"]))
    ctx.progress(0, len(rows), "scoring")
    s, norm, warnings = insp.score_rows(feats, rows)
    threshold = current_threshold(project, model)
    norm = normalized_scores(s, model["config"]["calibration"], threshold)
    run_id = ctx.run_id or project.start_run("inspect", {"model_id": model["id"]}, status="running")
    out = []
    for i, r in enumerate(raw):
        lab = None if labels is None else ("good" if labels[i] == 0 else "anomaly")
        out.append({"model_id": model["id"], "item_path": f"row {i + 2}", "score": float(s[i]),
                    "normalized_score": float(norm[i]), "verdict": "FAIL" if s[i] >= threshold else "PASS",
                    "label": lab, "meta": {"row": i + 2, "values": dict(zip(header, r))}})
    for start in range(0, len(out), 500):
        ctx.check_cancelled()
        project.add_inspection_results(run_id, out[start:start + 500])
        ctx.progress(min(start + 500, len(out)), len(out), "storing results")
    return {"run_id": run_id, "model_id": model["id"], "inspected": len(out), "warnings": warnings}
