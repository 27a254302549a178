"""Views: good images of clearly different shapes get their own statistics (core.inspect.views),
trained end to end on real magnetic_tile images of two shapes."""

import core.inspect  # noqa: F401  (first: importing core sets how OpenMP threads wait, before torch loads)
import copy
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from desktop.launcher import main
from core.inspect import data as D
from core.inspect import store, train
from core.inspect import views as V
from core.inspect.score import Inspector
from tests.test_inspect_engine import FAST, Ctx


def test_views_are_cut_at_wide_gaps_in_aspect_ratio():
    assert V.find_edges([1.0] * 100) == []  # one shape: one view, as before views existed
    edges = V.find_edges([0.4] * 40 + [1.0] * 40)
    assert len(edges) == 1 and 0.4 < edges[0] < 1.0
    assert V.find_edges([0.4] * 10 + [1.0] * 80) == []  # too few images for a view of their own
    assert V.find_edges([0.4] * 20 + [1.0] * 20) == []
    assert V.find_edges(np.linspace(0.5, 2.0, 300)) == []  # shapes vary, but without a gap
    # a few images spread at random over a continuum: its widest gaps are chance, not views
    spread = np.exp(np.random.default_rng(0).uniform(np.log(0.5), np.log(2.0), 60))
    assert np.diff(np.sort(np.log(spread))).max() > V.MIN_GAP and V.find_edges(spread) == []
    assert V.find_edges([1.0] * 40 + [1.04] * 40) == []  # 4 % apart: cropping noise, not a view
    five = V.find_edges([0.3] * 40 + [0.6] * 40 + [1.0] * 40 + [1.5] * 40 + [2.5] * 40)
    assert len(five) == V.MAX_VIEWS - 1 and five == sorted(five)
    assert V.view_of([0.3, 0.7, 1.0, 2.0], [0.5, 1.0]).tolist() == [0, 1, 2, 2]
    assert V.views_of_shapes([(200, 100), (100, 200)], [1.0]).tolist() == [0, 1]  # (height, width)
    assert V.describe([0.5]) == ["width/height below 0.50", "width/height 0.50 and above"]


def _aspect(path):
    with Image.open(path) as im:
        return im.size[0] / im.size[1]


@pytest.fixture(scope="module")
def two_shapes(tmp_path_factory, shared_data):
    """magnetic_tile images of two shapes: tall (width/height < 0.5) and about square (0.75-1.0)."""
    src = shared_data / "qa" / "magnetic_tile"
    dst = tmp_path_factory.mktemp("mt_views")

    def pick(folder, n, lo, hi):
        return [p for p in sorted(folder.iterdir()) if lo <= _aspect(p) < hi][:n]

    (dst / "train" / "good").mkdir(parents=True)
    for lo, hi in ((0.0, 0.5), (0.75, 1.0)):
        for p in pick(src / "train" / "good", 34, lo, hi):
            shutil.copy(p, dst / "train" / "good")
        (dst / "test" / "good").mkdir(parents=True, exist_ok=True)
        for p in pick(src / "test" / "good", 3, lo, hi):
            shutil.copy(p, dst / "test" / "good")
        for kind in ("blowhole", "fray"):
            (dst / "test" / kind).mkdir(parents=True, exist_ok=True)
            (dst / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            for p in pick(src / "test" / kind, 2, lo, hi):
                shutil.copy(p, dst / "test" / kind)
                shutil.copy(src / "ground_truth" / kind / f"{p.stem}_mask.png", dst / "ground_truth" / kind)
    return dst


@pytest.fixture(scope="module")
def two_view_model(two_shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("views_model") / "m"
    res = train.run({"data": str(two_shapes), "out": str(out), "seed": 1, "context_features": True, **FAST}, Ctx())
    return out, res


def test_training_finds_the_views_and_fits_statistics_for_each(two_view_model):
    out, res = two_view_model
    cfg, tensors = store.load_model(out)
    edges = cfg["views"]["edges"]
    assert len(edges) == 1 and 0.5 <= edges[0] < 0.75 and cfg["views"]["images"] == [34, 34]
    # three held-out images of each view, the rest trains
    assert cfg["training"]["holdout_images"] == 6 and res["images"] == 62
    size = cfg["preprocess"]["size"]
    assert tensors["stats.mean"].shape == tensors["stats.std"].shape == (2, size, size)
    for prefix in ("features.", "context_features."):
        entry = cfg["map"][prefix[:-1]]
        assert entry["images"] == [31, 31] and len(entry["cells"]) == 2
        for v, cells in enumerate(entry["cells"]):
            mean = tensors[prefix + ("" if v == 0 else f"view{v}.") + "mean"]
            assert mean.shape == (cells ** 2, entry["channels"])
        assert f"{prefix}view1.channels" not in tensors  # the views share view 0's channels
    assert not torch.equal(tensors["features.mean"], tensors["features.view1.mean"])
    combine = cfg["map"]["combine"]
    assert set(combine) == {"own", "features", "context", "context_features"}
    assert all(len(per_view) == 2 and per_view[0] != per_view[1] for per_view in combine.values())


def _one_view(full, cfg, v):
    """View v of a two-view model as a one-view inspector of its own."""
    cfg = copy.deepcopy(cfg)
    cfg.pop("views")
    cfg["map"]["combine"] = {k: s[v] for k, s in cfg["map"]["combine"].items()}
    for name in ("features", "context_features"):
        cfg["map"][name]["cells"] = cfg["map"][name]["cells"][v]
    stats = {k: t[v] for k, t in full.stats.items()}
    return Inspector(full.net, cfg, full.device, stats, full.features[v], full.context, full.context_features[v])


def test_each_image_is_scored_against_its_own_views_statistics(two_view_model, two_shapes):
    out, _ = two_view_model
    full = Inspector.load(out, "cpu")
    cfg, _ = store.load_model(out)
    paths = sorted(p for p in (two_shapes / "test").rglob("*.*"))
    rows, maps, _ = full.inspect_paths(paths, keep_maps=True)
    views = full.views_of([(r["height"], r["width"]) for r in rows])
    assert sorted(set(views.tolist())) == [0, 1] and bool((views[1:] < views[:-1]).any())  # mixed order
    for v in (0, 1):
        mine = [p for p, w in zip(paths, views) if w == v]
        single_rows, single_maps, _ = _one_view(full, cfg, v).inspect_paths(mine, keep_maps=True)
        for p, r in zip(mine, single_rows):
            assert torch.allclose(torch.from_numpy(maps[str(p)]), torch.from_numpy(single_maps[str(p)]), atol=1e-5)
            assert r["score"] == pytest.approx(next(x["score"] for x in rows if x["path"] == str(p)), abs=1e-5)
    # batches of mixed views are sorted for scoring and handed back in the caller's order
    x = torch.from_numpy(np.stack(D.load_batch(paths, full.prep)[0]))
    scores, batch_maps = full.score_tensor(x, views=views)
    for i in range(len(paths)):
        alone, alone_map = full.score_tensor(x[i:i + 1], views=views[i:i + 1])
        assert scores[i] == pytest.approx(float(alone[0]), abs=1e-5)
        assert torch.allclose(batch_maps[i], alone_map[0], atol=1e-5)
    with pytest.raises(ValueError, match="several views"):
        full.score_tensor(x)


def test_eval_and_calibrate_score_images_by_their_views(two_view_model, two_shapes, tmp_path, capsys):
    out, _ = two_view_model
    assert main(["inspect", "eval", str(out), str(two_shapes), "--json", "--device", "cpu"]) == 0
    ev = json.loads(capsys.readouterr().out)
    full = Inspector.load(out, "cpu")
    from core.inspect.evaluate import eval_items, load_labelled
    from core.inspect.metrics import roc_auc

    x, items, _, _, _, views = load_labelled(full, eval_items(D.scan(two_shapes)))
    scores = full.score_tensor(x, keep_maps=False, views=views)[0].numpy()
    assert ev["image_auroc"] == pytest.approx(roc_auc([0 if i.is_good else 1 for i in items], scores))
    copy_dir = tmp_path / "m"
    shutil.copytree(out, copy_dir)
    assert main(["inspect", "calibrate", str(copy_dir), str(two_shapes), "--choose-maps", "--json",
                 "--device", "cpu"]) == 0
    cal = json.loads(capsys.readouterr().out)
    assert cal["method"] == "f1_optimal" and cal["maps"]
    assert Inspector.load(copy_dir, "cpu").n_views == 2


def test_one_view_keeps_a_single_set_of_statistics(two_shapes, tmp_path):
    out = tmp_path / "one"
    assert main(["inspect", "train", str(two_shapes), "--out", str(out), "--image-size", "64", "--patch", "32",
                 "--steps", "2", "--device", "cpu", "--one-view", "--no-context"]) == 0
    cfg, tensors = store.load_model(out)
    assert "views" not in cfg and tensors["stats.mean"].dim() == 2
    assert isinstance(cfg["map"]["features"]["cells"], int) and not any(".view" in k for k in tensors)
    assert Inspector.load(out, "cpu").views_of([(100, 40), (100, 100)]) is None


def test_the_command_line_says_which_views_it_found(two_shapes, tmp_path, capsys):
    assert main(["inspect", "train", str(two_shapes), "--out", str(tmp_path / "m"), "--image-size", "64",
                 "--patch", "32", "--steps", "1", "--device", "cpu", "--no-context"]) == 0
    views = [line for line in capsys.readouterr().err.splitlines() if "views by image shape" in line]
    assert len(views) == 1 and views[0].startswith("inspect.train: ") and "(34 images)" in views[0]


def test_operator_trains_and_inspects_a_product_photographed_in_two_shapes(qtbot, two_shapes, tmp_path):
    """The app end to end: import, train (the result says which shapes became views), inspect the
    test split (each image against its own view: the same scores as the engine), calibrate."""
    pytest.importorskip("pyqtgraph")
    from core.inspect import session
    from core.project import Project
    from tests.test_desktop_inspection_view import make_view, wait_job

    Project.create(tmp_path / "views.lienzo").close()
    view, project, jobs, signals = make_view(qtbot, tmp_path / "views.lienzo")
    try:
        page = view.show_step("data")
        wait_job(qtbot, page.import_folder(str(two_shapes), storage="referenced", name="two shapes"))
        train_page = view.show_step("train")
        train_page.set_preset("fast")
        train_page.image_size.setCurrentIndex(train_page.image_size.findData(64))
        train_page.budget.setValue(6)
        handle = train_page.start({"patch": 32, "batch": 8})
        wait_job(qtbot, handle)
        assert handle.status == "done", handle.error
        assert "come in 2 shapes" in train_page.result.text()
        assert "width/height below" in train_page.result.text()
        model = project.list_models("inspector")[0]
        assert len(model["config"]["views"]["edges"]) == 1

        inspect = view.show_step("inspect")
        inspect.source.setCurrentIndex(0)  # the data set's test split
        handle = inspect.inspect()
        wait_job(qtbot, handle)
        assert handle.status == "done", handle.error
        results = view.state.results
        assert len(results) == len(list((two_shapes / "test").rglob("*.jpg")))
        engine = Inspector.load(model["path"], "cpu")
        rows, _, _ = engine.inspect_paths([r["item_path"] for r in results])
        assert engine.views_of([(r["height"], r["width"]) for r in rows]).unique().numel() == 2
        for stored, row in zip(results, rows):
            assert stored["score"] == pytest.approx(row["score"], abs=1e-4)

        page = view.show_step("threshold")
        handle = page.calibrate()
        wait_job(qtbot, handle)
        assert handle.status == "done", handle.error
        assert view.state.model["config"]["calibration"]["method"] == "f1_optimal"
        assert session.current_threshold(project, view.state.model) == pytest.approx(handle.result["threshold"])
    finally:
        view.shutdown()
        signals.detach()
        jobs.shutdown()
        project.close()
