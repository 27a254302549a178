"""Tabular inspector: CSV reading and encoding (numeric, categorical, missing, constant, text in
numeric columns), MLP VAE training/scoring, exact reload, CLI commands, bad input."""

import core.inspect  # noqa: F401  (first: importing core sets how OpenMP threads wait, before torch loads)
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import AppError
from core.inspect import store, tabular

ROOT = Path(__file__).resolve().parents[1]


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def thyroid_subset(shared_data, tmp_path_factory):
    header, rows = tabular.read_csv(shared_data / "tabular" / "odds_thyroid.csv")
    rng = np.random.default_rng(0)
    lab = header.index("label")
    normal = [r for r in rows if r[lab] == "0"]
    bad = [r for r in rows if r[lab] == "1"]
    pick = [normal[i] for i in rng.choice(len(normal), 500, replace=False)] + bad[:40]
    return _write(tmp_path_factory.mktemp("tab") / "thyroid.csv", header, pick)


def _mixed_rows(n, rng, shift=0.0):
    rows = []
    for i in range(n):
        a = rng.normal(10 + shift, 2)
        b = a * 2 + rng.normal(0, 0.5)
        colour = ["red", "green", "blue"][i % 3]
        rows.append([f"{a:.3f}", "" if i % 17 == 0 else f"{b:.3f}", colour, "7", "x" if i == 5 else f"{i % 5}"])
    return rows


def test_encoding_handles_mixed_columns(tmp_path):
    rng = np.random.default_rng(1)
    header = ["a", "b", "colour", "const", "mostly_num"]
    enc, warnings = tabular.fit_encoder(header, _mixed_rows(60, rng))
    kinds = {c["name"]: c["kind"] for c in enc["columns"]}
    assert kinds == {"a": "numeric", "b": "numeric", "colour": "categorical", "const": "constant",
                     "mostly_num": "numeric"}
    assert any("'mostly_num'" in w and "'x'" in w for w in warnings)
    assert any("constant" in w for w in warnings)
    x, names, w2 = tabular.encode(enc, header, [["1", "n/a", "purple", "8", "oops"]])
    assert np.isfinite(x).all()
    assert "b?missing" in names and "colour=other" in names and "const?changed" in names
    assert x[0, names.index("const?changed")] == 1.0 and x[0, names.index("b?missing")] == 1.0
    assert any("not seen in training" in w for w in w2) and any("non-numeric" in w for w in w2)
    with pytest.raises(AppError, match="lacks column"):
        tabular.encode(enc, ["a"], [["1"]])



def test_numeric_columns_get_normal_scores_that_keep_extremes_extreme():
    # a heavy-tailed column: a z-score squeezes most rows together, normal scores spread them out
    rng = np.random.default_rng(2)
    values = rng.lognormal(0, 1.5, 2000)
    enc, _ = tabular.fit_encoder(["v"], [[f"{v:.6g}"] for v in values])
    x, _, _ = tabular.encode(enc, ["v"], [[f"{v:.6g}"] for v in values])
    assert abs(float(np.median(x))) < 0.05 and 0.9 < float(x.std()) < 1.1
    # beyond the training range the score keeps growing with the value, in standard deviations
    top, sd = float(values.max()), float(values.std())
    far, _, _ = tabular.encode(enc, ["v"], [[str(top)], [str(top + sd)], [str(top + 3 * sd)], [str(-top)]])
    assert far[0, 0] < far[1, 0] < far[2, 0] and far[3, 0] < x.min()
    assert far[2, 0] - far[1, 0] == pytest.approx(2.0, rel=1e-3)
    # a model saved before quantile knots existed still encodes with its plain z-scores
    old = {"columns": [{k: v for k, v in enc["columns"][0].items() if k != "knots"}]}
    z, _, _ = tabular.encode(old, ["v"], [[str(top)]])
    assert z[0, 0] == pytest.approx((top - old["columns"][0]["mean"]) / sd, rel=1e-4)

def test_vae_flags_shifted_rows_and_reloads_exactly(tmp_path):
    rng = np.random.default_rng(2)
    header = ["a", "b", "colour", "const", "mostly_num"]
    res = tabular.train_rows(header, _mixed_rows(300, rng), {"epochs": 40, "seed": 0})
    folder = tmp_path / "m"
    store.save_model(folder, res["tensors"], res["config"])
    live = tabular.TableInspector(res["config"], res["net"], res["err_scale"])
    loaded = tabular.TableInspector.load(folder)
    test_rows = _mixed_rows(30, rng) + _mixed_rows(30, rng, shift=12.0)
    s1, n1, _ = live.score_rows(header, test_rows)
    s2, n2, _ = loaded.score_rows(header, test_rows)
    assert np.array_equal(s1, s2) and np.array_equal(n1, n2)
    m = tabular.table_metrics(s1, n1, [0] * 30 + [1] * 30)
    assert m["roc_auc"] > 0.95 and m["catch_rate_anomaly"] > 0.9


def test_bad_csvs_are_clear(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(AppError, match="empty"):
        tabular.read_csv(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(AppError, match="no data rows"):
        tabular.read_csv(tmp_path / "header.csv")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(AppError, match="Row 3"):
        tabular.read_csv(tmp_path / "ragged.csv")
    with pytest.raises(AppError, match="does not exist"):
        tabular.read_csv(tmp_path / "nope.csv")
    h, rows = ["a", "label"], [["1", "maybe"]]
    with pytest.raises(AppError, match="not 0/1"):
        tabular.split_label(h, rows, "label", required=True)
    with pytest.raises(AppError, match="no label column 'target'"):
        tabular.split_label(["a"], [["1"]], "target", required=True)
    with pytest.raises(AppError, match="Only 3 normal rows"):
        tabular.train_rows(["a"], [["1"], ["2"], ["3"]], {})


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "desktop.launcher", "inspect", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_cli_train_eval_run_table(thyroid_subset, tmp_path):
    from core.project import Project

    model, proj = tmp_path / "tab_model", tmp_path / "t.lienzo"
    r = _cli("train-table", thyroid_subset, "--out", model, "--epochs", 30, "--json", "--project", proj)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["left_out_anomalies"] == 40 and out["rows"] == 500
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["task"] == "table" and cfg["encoder"]["columns"][0]["kind"] == "numeric"
    r = _cli("eval-table", model, thyroid_subset, "--json", "--project", proj)
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert ev["roc_auc"] > 0.8 and "f1" in ev and ev["anomalies"] == 40
    r = _cli("run-table", model, thyroid_subset, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["results"]
    assert len(res) == 540 and {"row", "score", "verdict"} <= set(res[0])
    with Project.open(proj, read_only=True) as p:
        runs = {r["kind"]: r for r in p.list_runs()}
        assert runs["inspect.eval_table"]["status"] == "done"
        assert len(p.inspection_results(runs["inspect.eval_table"]["id"])) == 540
    # Missing label column when asked for one; eval without labels.
    nolabel = _write(tmp_path / "nolabel.csv", ["f0", "f1", "f2", "f3", "f4", "f5"], [["0.1"] * 6] * 12)
    r = _cli("train-table", nolabel, "--out", tmp_path / "m2", "--label-column", "target")
    assert r.returncode == 2 and "no label column 'target'" in r.stderr and "hint:" in r.stderr
    r = _cli("eval-table", model, nolabel)
    assert r.returncode == 2 and "no label column" in r.stderr
    # Text in a numeric column while scoring: a warning, the row still gets a score.
    bad = _write(tmp_path / "bad.csv", ["f0", "f1", "f2", "f3", "f4", "f5"], [["abc", "0.1", "0.1", "0.1", "0.1", "0.1"]])
    r = _cli("run-table", model, bad, "--json")
    assert r.returncode == 0 and "non-numeric" in r.stderr
    r = _cli("eval-table", tmp_path / "m_missing", thyroid_subset)
    assert r.returncode == 2 and "does not exist" in r.stderr
