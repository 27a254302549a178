"""Inspection reports: the data of one inspection run at a threshold, as CSV and as HTML (the
desktop prints the same HTML to PDF with Qt). Qt-free; images are PNG bytes made with PIL.

A report carries what an auditor asks for: the model and the data it was trained on, the
threshold and how it was set, the metrics when labels are known, a summary table, every FAIL with
a thumbnail and its heat map, who made the report and when.
"""

from __future__ import annotations

import base64
import csv
import getpass
import html
import io
import time
from pathlib import Path

import numpy as np

from core.errors import AppError
from core.inspect import session as S

THUMB = 160


def heat_colors(level: np.ndarray) -> np.ndarray:
    """A perceptual dark-red-yellow-white ramp ('hot'), level in [0, 1] -> RGB float."""
    r = np.clip(level * 3.0, 0, 1)
    g = np.clip(level * 3.0 - 1.0, 0, 1)
    b = np.clip(level * 3.0 - 2.0, 0, 1)
    return np.stack([r, g, b], -1)


def overlay_png(project, result: dict, threshold: float, size: int = THUMB, opacity: float = 0.55) -> tuple[bytes, bytes]:
    """(thumbnail PNG, heat-map overlay PNG) of one result; the colour scale runs from 0 to twice
    the threshold, so yellow-white means 'above the threshold'."""
    from PIL import Image

    meta = result.get("meta") or {}
    try:
        if result.get("image_id"):
            data = project.image_bytes(result["image_id"])
        else:
            data = Path(result["item_path"]).read_bytes()
        im = Image.open(io.BytesIO(data))
        im.load()
        im = Image.fromarray((S.D.pil_to_array(im, 3) * 255).astype(np.uint8), "RGB")
    except Exception:  # the source moved: the reconstruction stands in for it
        im = Image.open(io.BytesIO(project.image_bytes(meta["recon_image_id"]))).convert("RGB")
    im.thumbnail((size, size))
    thumb = io.BytesIO()
    im.save(thumb, format="PNG")
    amap = Image.open(io.BytesIO(project.image_bytes(result["heatmap_image_id"]))).convert("L")
    amap = amap.resize(im.size, Image.BILINEAR)
    values = np.asarray(amap, dtype=np.float32) / 255.0 * float(meta.get("map_scale", 1.0))
    level = np.clip(values / max(2 * threshold, 1e-12), 0, 1)
    base = np.asarray(im, dtype=np.float32) / 255.0
    alpha = (opacity * np.clip(level * 2, 0, 1))[..., None]
    out = base * (1 - alpha) + heat_colors(level) * alpha
    buf = io.BytesIO()
    Image.fromarray((out * 255).astype(np.uint8), "RGB").save(buf, format="PNG")
    return thumb.getvalue(), buf.getvalue()


def report_data(project, run_id: int, threshold: float | None = None, operator: str | None = None,
                with_images: bool = True) -> dict:
    """Everything a report shows, computed from the stored results (no model is run)."""
    results = project.inspection_results(run_id)
    if not results:
        raise AppError("This inspection run has no results to report.", "Inspect some images first.")
    model = project.get_model(results[0]["model_id"]) if results[0]["model_id"] else None
    if model is None:
        raise AppError("The model of this inspection run was deleted.", "Inspect again with an existing model.")
    if threshold is None:
        threshold = S.current_threshold(project, model)
    scores = np.array([r["score"] for r in results], dtype=np.float64)
    verdicts = S.verdicts(scores, threshold)
    calibration = model["config"].get("calibration") or {}
    norm = S.normalized_scores(scores, calibration, threshold)
    rows = []
    for r, v, n in zip(results, verdicts, norm):
        rows.append({"id": r["id"], "path": r["item_path"], "name": (r.get("meta") or {}).get("name") or r["item_path"],
                     "score": float(r["score"]), "normalized_score": float(n), "verdict": v,
                     "label": r.get("label") or "", "result": r})
    stats = S.threshold_stats(scores, [r["label"] for r in results], threshold)
    cfg = model["config"]
    training = cfg.get("training") or {}
    dataset = None
    if cfg.get("dataset_id"):
        try:
            dataset = S.dataset_summary(project, cfg["dataset_id"])
        except AppError:
            dataset = {"name": cfg.get("dataset", "(deleted)"), "total": None, "counts": {}}
    per_label: dict[str, dict] = {}
    for row in rows:
        entry = per_label.setdefault(row["label"] or "(unlabelled)", {"count": 0, "fail": 0})
        entry["count"] += 1
        entry["fail"] += row["verdict"] == "FAIL"
    data = {
        "title": "Inspection report",
        "operator": operator or getpass.getuser(),
        "time": time.time(),
        "run_id": run_id,
        "model": {"id": model["id"], "name": model["name"], "path": model["path"], "kind": model["kind"],
                  "created_at": model.get("created_at"), "preset": cfg.get("preset"),
                  "settings": cfg.get("settings") or {}, "training": training, "metrics": cfg.get("metrics") or {}},
        "dataset": dataset,
        "threshold": float(threshold),
        "scored_before_map_change": S.scored_before_map_change(project, model, run_id),
        "calibrated_threshold": float(calibration.get("threshold", threshold)),
        "calibration_method": calibration.get("method"),
        "counts": S.counts(scores, threshold),
        "stats": {k: v for k, v in stats.items() if k not in ("roc", "hist")},
        "per_label": per_label,
        "rows": rows,
        "fails": [],
    }
    task = cfg.get("task", "image")
    for row in rows:
        if row["verdict"] != "FAIL":
            continue
        entry = {"name": row["name"], "path": row["path"], "score": row["score"], "label": row["label"]}
        if with_images and task == "image" and row["result"].get("heatmap_image_id"):
            try:
                entry["thumb"], entry["heatmap"] = overlay_png(project, row["result"], threshold)
            except (AppError, OSError, KeyError):
                pass
        data["fails"].append(entry)
    return data


def write_csv(data: dict, path) -> Path:
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "score", "normalized_score", "verdict", "label"])
        for r in data["rows"]:
            w.writerow([r["path"], f"{r['score']:.10g}", f"{r['normalized_score']:.4f}", r["verdict"], r["label"]])
    return path


def _fmt(v, pct=False) -> str:
    if v is None:
        return "—"
    if pct:
        return f"{100 * v:.1f} %"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


STALE = ('<p class="FAIL">These parts were scored before the model\'s anomaly maps were chosen anew: their '
         'scores are on another scale than the threshold. Inspect them again for verdicts that hold.</p>')


def render_html(data: dict, embed: bool = True) -> tuple[str, dict[str, bytes]]:
    """(HTML text, images by name). With `embed`, images are data: URIs inside the HTML; without,
    <img src> names refer to the returned images (the PDF writer adds them as resources)."""
    e = html.escape
    images: dict[str, bytes] = {}

    def img(name: str, png: bytes) -> str:
        images[name] = png
        src = "data:image/png;base64," + base64.b64encode(png).decode() if embed else name
        return f'<img src="{src}" width="{THUMB}">'

    m, c, st = data["model"], data["counts"], data["stats"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data["time"]))
    out = [f"""<html><head><meta charset="utf-8"><title>{e(data['title'])} — {e(m['name'])}</title>
<style>body{{font-family:sans-serif;font-size:10pt;color:#222}} h1{{font-size:16pt}} h2{{font-size:12pt;
margin-top:14pt}} table{{border-collapse:collapse}} td,th{{border:1px solid #bbb;padding:3px 6px;text-align:left}}
th{{background:#eee}} .FAIL{{color:#b00020;font-weight:bold}} .PASS{{color:#1b7f3a;font-weight:bold}}</style>
</head><body>
<h1>{e(data['title'])}</h1>
<p>Operator: <b>{e(data['operator'])}</b> · Date: <b>{e(when)}</b> · Inspection run {data['run_id']}</p>
<h2>Model</h2><table>
<tr><th>Name</th><td>{e(m['name'])}</td></tr>
<tr><th>Folder</th><td>{e(str(m['path']))}</td></tr>
<tr><th>Preset</th><td>{e(str(m.get('preset') or '—'))}</td></tr>
<tr><th>Image size</th><td>{e(str(m['settings'].get('image_size', '—')))}</td></tr>
<tr><th>Training</th><td>{e(str(m['training'].get('steps', '—')))} steps, {e(str(m['training'].get('seconds', '—')))} s,
{e(str(m['training'].get('images', m['training'].get('rows', '—'))))} good items</td></tr>
<tr><th>Training data fingerprint</th><td>{e(str(m['training'].get('data_fingerprint', '—'))[:16])}</td></tr>
</table>"""]
    ds = data.get("dataset")
    if ds:
        counts = ", ".join(f"{k[0]}/{k[1]}: {v}" for k, v in sorted(ds.get("counts", {}).items()))
        out.append(f"<h2>Training data</h2><p>Data set <b>{e(ds['name'])}</b> ({e(str(ds.get('total')))} items"
                   f"{'; ' + e(counts) if counts else ''}).</p>")
    out.append(f"""<h2>Threshold</h2><p>Threshold in force: <b>{data['threshold']:.5g}</b>
(calibrated: {data['calibrated_threshold']:.5g}, {e(str(data.get('calibration_method') or ''))}).</p>
{STALE if data.get('scored_before_map_change') else ''}
<h2>Summary</h2><table><tr><th>Inspected</th><th>PASS</th><th>FAIL</th></tr>
<tr><td>{c['total']}</td><td class="PASS">{c['pass']}</td><td class="FAIL">{c['fail']}</td></tr></table>
<table><tr><th>Label</th><th>Items</th><th>FAIL</th></tr>""")
    for label, entry in sorted(data["per_label"].items()):
        out.append(f"<tr><td>{e(label)}</td><td>{entry['count']}</td><td>{entry['fail']}</td></tr>")
    out.append("</table>")
    if st.get("confusion"):
        cm = st["confusion"]
        out.append(f"""<h2>Metrics (labelled items)</h2><table>
<tr><th>AUROC</th><td>{_fmt(st.get('auroc'))}</td><th>F1</th><td>{_fmt(st.get('f1'))}</td></tr>
<tr><th>Best F1 (any threshold)</th><td>{_fmt(st.get('f1_max'))}</td><th>at threshold</th>
<td>{_fmt(st.get('f1_max_threshold'))}</td></tr>
<tr><th>Good parts passed</th><td>{_fmt(st.get('pass_rate_good'), True)}</td>
<th>Defects caught</th><td>{_fmt(st.get('catch_rate_defect'), True)}</td></tr>
<tr><th>True FAIL (defect)</th><td>{cm['tp']}</td><th>False alarms (good)</th><td>{cm['fp']}</td></tr>
<tr><th>Missed defects</th><td>{cm['fn']}</td><th>True PASS (good)</th><td>{cm['tn']}</td></tr></table>""")
    tm = m.get("metrics") or {}
    if tm:
        out.append("<p>At training time: " + ", ".join(
            f"{e(k)} {_fmt(v)}" for k, v in tm.items() if isinstance(v, (int, float)) and v is not None) + "</p>")
    out.append(f"<h2>FAIL items ({len(data['fails'])})</h2>")
    if data["fails"]:
        out.append("<table><tr><th>Item</th><th>Score</th><th>Label</th><th>Image</th><th>Heat map</th></tr>")
        for i, f in enumerate(data["fails"]):
            pic = img(f"fail{i}.png", f["thumb"]) if f.get("thumb") else ""
            heat = img(f"heat{i}.png", f["heatmap"]) if f.get("heatmap") else ""
            out.append(f"<tr><td>{e(f['name'])}<br><small>{e(str(f['path']))}</small></td><td>{f['score']:.5g}</td>"
                       f"<td>{e(f['label'] or '—')}</td><td>{pic}</td><td>{heat}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p>No item failed at this threshold.</p>")
    out.append("<h2>All items</h2><table><tr><th>Item</th><th>Score</th><th>Verdict</th><th>Label</th></tr>")
    for r in data["rows"]:
        out.append(f"<tr><td>{e(r['name'])}</td><td>{r['score']:.5g}</td>"
                   f"<td class=\"{r['verdict']}\">{r['verdict']}</td><td>{e(r['label'] or '—')}</td></tr>")
    out.append(f"</table><p><small>Made by Lienzo on {e(when)} for {e(data['operator'])}.</small></p></body></html>")
    return "\n".join(out), images


def write_html(data: dict, path) -> Path:
    text, _ = render_html(data, embed=True)
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path


def record(project, data: dict, fmt: str, path) -> None:
    project.audit("inspect.report", {"format": fmt, "path": str(path), "run_id": data["run_id"],
                                     "model_id": data["model"]["id"], "model": data["model"]["name"],
                                     "threshold": data["threshold"], "fail": data["counts"]["fail"],
                                     "total": data["counts"]["total"]}, user=data["operator"])
