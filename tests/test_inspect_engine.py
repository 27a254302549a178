"""The image inspector end to end on a small real subset of magnetic_tile: training job (progress,
cancel, checkpoint/resume, seed), model folder integrity, exact reload, robustness to lighting and
small shifts, metrics, CLI with JSON output and project recording, GPU script on CPU."""

import core.inspect  # noqa: F401  (first: importing core sets how OpenMP threads wait, before torch loads)
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import AppError, Cancelled
from core.inspect import data as D
from core.inspect import model as M
from core.inspect import store, train
from core.inspect.score import Inspector, calibrate, effective_threshold, normalised
from core.jobs import JobRunner

ROOT = Path(__file__).resolve().parents[1]
FAST = {"image_size": 64, "patch": 32, "batch": 16, "steps": 60, "device": "cpu", "checkpoint_every_s": 0}


class Ctx:
    """A minimal job context for calling run() directly (the runner is tested separately)."""

    def __init__(self, cancel_after=None):
        self.metrics, self.logs, self.events, self.cancel_after = {}, [], [], cancel_after
        self.previews = []
        self.project = None

    def progress(self, step, total, message="", preview=None):
        self.events.append((step, total, message))
        if preview is not None:
            self.previews.append(preview)

    def check_cancelled(self):
        if self.cancel_after is not None and len(self.events) >= self.cancel_after:
            raise Cancelled()

    def log(self, line):
        self.logs.append(line)


@pytest.fixture(scope="module")
def subset(tmp_path_factory, shared_data):
    """A small MVTec-layout copy: 14 good training images, 6 good and 6 defective test images."""
    src = shared_data / "qa" / "magnetic_tile"
    dst = tmp_path_factory.mktemp("mt")
    goods = sorted((src / "train" / "good").iterdir())[:14]
    (dst / "train" / "good").mkdir(parents=True)
    for p in goods:
        shutil.copy(p, dst / "train" / "good")
    (dst / "test" / "good").mkdir(parents=True)
    for p in sorted((src / "test" / "good").iterdir())[:6]:
        shutil.copy(p, dst / "test" / "good")
    for kind in ("blowhole", "crack"):
        (dst / "test" / kind).mkdir(parents=True)
        (dst / "ground_truth" / kind).mkdir(parents=True)
        for p in sorted((src / "test" / kind).iterdir())[:3]:
            shutil.copy(p, dst / "test" / kind)
            shutil.copy(src / "ground_truth" / kind / f"{p.stem}_mask.png", dst / "ground_truth" / kind)
    return dst


@pytest.fixture(scope="module")
def trained(subset, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    ctx = Ctx()
    res = train.run({"data": str(subset), "out": str(out), "seed": 3, "context_features": True, **FAST}, ctx)
    return out, res, ctx


def test_training_reports_progress_and_writes_a_complete_folder(trained):
    out, res, ctx = trained
    assert res["steps"] == 60 and res["images"] == 11  # three good images held out for the threshold
    assert any("loss" in m and "ETA" in m for _, _, m in ctx.events)
    cfg = json.loads((out / "config.json").read_text())
    for key in ("arch", "preprocess", "calibration", "map", "sensitivity", "library_versions", "files_sha256"):
        assert key in cfg
    assert cfg["training"]["data_fingerprint"] and cfg["calibration"]["method"] == "good_holdout"
    assert not (out / "checkpoint").exists()
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_part_types_set_the_maps_and_explicit_settings_override_them(subset, tmp_path):
    def config(**params):
        out = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        train.run({"data": str(subset), "out": str(out), "seed": 1, **FAST, "steps": 6, **params}, Ctx())
        return Inspector.load(out, "cpu")

    # Patterned parts: the VAE's own map alone; no context segmenter trains beside it.
    patterned = config(part_type="patterned")
    assert patterned.available_maps() == ["own"] and patterned.context is None and patterned.features is None
    assert patterned.config["training"]["part_type"] == "patterned"
    assert "combine" not in patterned.config["map"]
    # Textured parts: the two feature maps score, the context map joins them in the heat map.
    textured = config(part_type="textured")
    assert textured.available_maps() == ["own", "features", "context", "context_features"]
    assert textured.maps_in_use() == ["features", "context", "context_features"]
    assert textured.score_maps() == ["features", "context_features"]
    assert textured.config["context"]["steps_per_step"] == 16  # its segmenter localises: more of the budget
    crack = sorted((subset / "test" / "crack").iterdir())
    x = torch.from_numpy(np.stack(D.load_batch(crack, textured.prep)[0]))
    decoded = []
    hook = textured.net.decoder.register_forward_hook(lambda *_: decoded.append(1))
    scores, heat = textured.score_tensor(x)
    hook.remove()
    assert not decoded  # no own map in use: scoring runs the VAE's encoder alone
    with torch.inference_mode():
        parts = textured.scaled_parts(x)  # all maps: the whole VAE, the same encoder features
    assert torch.allclose(scores, (parts["features"] + parts["context_features"]).flatten(1).amax(1), atol=1e-4)
    # Its heat map weighs the context map 2 (it outlines regions the feature maps mark in patches)
    # and the VAE features' map a half.
    assert textured.config["map"]["heat_weights"] == {"features": 0.5, "context": 2.0}
    a, b = textured.config["map"]["heat_to_score"]
    summed = 0.5 * parts["features"] + 2 * parts["context"] + parts["context_features"]
    assert torch.allclose(heat, summed * a + b, atol=1e-3)
    # Its context map is the mean of the segmenter's logits at the image and its three mirror images.
    assert textured.config["map"]["context_flips"] is True and textured.config["map"]["context_logits"] is True
    with torch.inference_mode():
        looks = [textured.context(x.flip(d)).float().flip(d) for d in ((), (-1,), (-2,), (-2, -1))]
        mean_look = M.blur(sum(looks) / 4, textured.config["map"]["sigma"])[:, 0]
        offset, spread = textured.config["map"]["combine"]["context"]
        assert torch.allclose(parts["context"], (mean_look - offset) / spread, atol=1e-4)
        assert not torch.allclose(looks[0], looks[1], atol=1e-3)  # each look differs
    # Scores alone (no heat maps) run neither the context segmenter's decoder nor its mirror images.
    decoded = []
    hook = textured.context.out.register_forward_hook(lambda *_: decoded.append(1))
    scores_alone, no_heat = textured.score_tensor(x, keep_maps=False)
    hook.remove()
    assert no_heat is None and not decoded and torch.allclose(scores_alone, scores, atol=1e-5)
    # Without flips in training (a product with a handedness) the context map is a single look.
    unflipped = config(part_type="textured", flips=False)
    assert unflipped.config["map"]["context_flips"] is False
    with torch.inference_mode():
        one_look = M.blur(unflipped.context(x).float(), unflipped.config["map"]["sigma"])[:, 0]
        offset, spread = unflipped.config["map"]["combine"]["context"]
        assert torch.allclose(unflipped.scaled_parts(x)["context"], (one_look - offset) / spread, atol=1e-4)
    # Weighed 1, the same networks give the plain sum and the same image scores.
    plain = config(part_type="textured", heat_weights={})
    assert "heat_weights" not in plain.config["map"]
    with torch.inference_mode():
        plain_parts = plain.scaled_parts(x)
    plain_scores, plain_heat = plain.score_tensor(x)
    a1, b1 = plain.config["map"]["heat_to_score"]
    assert torch.allclose(plain_heat, sum(plain_parts[k] for k in plain.maps_in_use()) * a1 + b1, atol=1e-3)
    assert torch.allclose(plain_scores, scores, atol=1e-4)
    with pytest.raises(AppError, match="(?s)weight of 0 would hide the context map.*above 0"):
        config(part_type="textured", heat_weights={"context": 0})
    with pytest.raises(AppError, match="must map anomaly maps to numbers"):
        config(part_type="textured", heat_weights={"context": "2"})
    with pytest.raises(AppError, match="Unknown anomaly map 'colour'"):
        config(part_type="textured", heat_weights={"colour": 2.0})
    with pytest.raises(AppError, match="foreign-region share of 0 is out of range"):
        config(part_type="textured", context_foreign=0)
    # General (the default): the VAE's map and features score, the context map is in the heat map.
    general = config()
    assert general.config["training"]["part_type"] == "general"
    assert general.maps_in_use() == ["own", "features", "context"] and general.score_maps() == ["own", "features"]
    assert general.config["context"]["steps_per_step"] == 2
    # A setting given explicitly wins over the part type's.
    assert config(part_type="patterned", context=True).available_maps() == ["own", "context"]
    assert config(part_type="textured", context_steps=1).config["context"]["steps_per_step"] == 1
    with pytest.raises(AppError, match="(?s)Unknown part type 'shiny'.*general, patterned, textured"):
        config(part_type="shiny")


def test_reloaded_model_scores_exactly_as_after_training(trained, subset):
    out, res, _ = trained
    # Score with the in-memory objects training built, then with a fresh load from disk.
    cfg, tensors = store.load_model(out)
    from core.inspect import model as M

    from core.inspect.feature_stats import FeatureGaussians

    net = M.build(cfg["arch"])
    net.load_state_dict({k: v for k, v in tensors.items()
                         if not k.startswith(("stats.", "features.", "context.", "context_features."))})
    stats = {k[6:]: v for k, v in tensors.items() if k.startswith("stats.")}
    gauss = FeatureGaussians.from_tensors(tensors, cfg["map"]["features"]["cells"])
    context_gauss = FeatureGaussians.from_tensors(tensors, cfg["map"]["context_features"]["cells"], "context_features.")
    context = M.ContextSegmenter(cfg["context"]["arch"])
    context.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("context.")})
    mem = Inspector(net, cfg, torch.device("cpu"), stats, gauss, context, context_gauss)
    paths = sorted((subset / "test" / "crack").iterdir())
    rows_a, _, _ = mem.inspect_paths(paths)
    rows_b, _, _ = Inspector.load(out, "cpu").inspect_paths(paths)
    assert [r["score"] for r in rows_a] == [r["score"] for r in rows_b]
    assert [r["verdict"] for r in rows_a] == [r["verdict"] for r in rows_b]


def test_scoring_copies_fold_the_batch_norms_and_agree_with_the_networks():
    from torch import nn

    from core.inspect import model as M

    torch.manual_seed(0)
    x = torch.rand(4, 1, 64, 64)
    nets = [M.build({**M.DEFAULT_ARCH, "channels": 1}), M.ContextSegmenter({"channels": 1}),
            M.build({"type": "textbook_vae", "channels": 1, "size": 64, "width": 8, "latent": 8})]
    for net in nets:
        net.train()
        for _ in range(3):  # running statistics unlike the norms' initial ones
            net(x * 3 + 1)
        folded = M.for_inference(net)
        norms = lambda m: sum(isinstance(k, nn.BatchNorm2d) for k in m.modules())  # noqa: E731
        assert norms(net) > 0 and norms(folded) == 0, type(net).__name__
        assert net.training and not folded.training  # the network itself is left as it was
        keys = set(net.state_dict())
        net.eval()
        with torch.no_grad():
            a, b = net(x), folded(x)
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert (u is None and v is None) or torch.allclose(u, v, rtol=1e-4, atol=1e-5), type(net).__name__
        assert set(net.state_dict()) == keys  # what a model folder saves is unchanged


def test_same_seed_same_weights(subset, tmp_path):
    a = train.run({"data": str(subset), "out": str(tmp_path / "a"), "seed": 1, **FAST, "steps": 4}, Ctx())
    b = train.run({"data": str(subset), "out": str(tmp_path / "b"), "seed": 1, **FAST, "steps": 4}, Ctx())
    assert a["config"]["files_sha256"] == b["config"]["files_sha256"]
    # by default three maps: the context segmenter's features are an option (--context-features)
    assert set(a["config"]["map"]["combine"]) == {"own", "features", "context"}
    assert "context_features" not in a["config"]["map"]


def test_cancel_then_resume_from_checkpoint(subset, tmp_path):
    out = tmp_path / "m"
    params = {"data": str(subset), "out": str(out), "seed": 2, **FAST, "steps": 12, "checkpoint_every_s": 1e-9}
    with pytest.raises(Cancelled):
        train.run(params, Ctx(cancel_after=6))
    meta = json.loads((out / "checkpoint" / "checkpoint.json").read_text())
    assert 0 < meta["step"] < 12
    assert (out / "checkpoint" / "checkpoint.safetensors").is_file()
    res = train.run(params, Ctx())
    assert res["steps"] == 12
    assert not (out / "checkpoint").exists()
    # Batches are made ahead in a thread (core.inspect.feeder); the checkpoint keeps the random
    # generators as they were after the last batch trained on, so the resumed run is the same run.
    whole = train.run({**params, "out": str(tmp_path / "whole")}, Ctx())
    assert whole["config"]["files_sha256"] == res["config"]["files_sha256"]


def test_job_runner_cancel_is_a_result(subset, tmp_path):
    runner = JobRunner()
    h = runner.submit(train.run, {"data": str(subset), "out": str(tmp_path / "m"), **FAST, "steps": 10_000},
                      kind="inspect.train")
    import time

    deadline = time.time() + 60
    while h.step < 2 and time.time() < deadline:
        time.sleep(0.05)
    h.cancel()
    assert h.wait(60)
    runner.shutdown()
    assert h.status == "cancelled"


def test_time_budget_stops_training(subset, tmp_path):
    res = train.run({"data": str(subset), "out": str(tmp_path / "m"), **{**FAST, "steps": None},
                     "time_budget": 1.0}, Ctx())
    assert res["train_seconds"] < 10 and res["steps"] >= 1


def test_time_budget_covers_the_whole_job(subset, tmp_path):
    """The budget is the job's wall clock: reading, training, fitting the statistics and
    calibrating all fit in it, so the loop stops early by what comes after it."""
    import time

    ctx, budget = Ctx(), 6.0
    t = time.monotonic()
    res = train.run({"data": str(subset), "out": str(tmp_path / "m"), **{**FAST, "steps": None, "image_size": 128},
                     "time_budget": budget}, ctx)
    wall = time.monotonic() - t
    assert wall < budget + 1.5, wall
    kept = [line for line in ctx.logs if "kept for fitting" in line]
    assert kept, ctx.logs
    assert res["train_seconds"] < budget - 1.0  # the loop left the post-fit reserve (at least its 1 s)
    # the result says what the work after the loop took against what was kept for it
    assert res["after_loop"]["reserved"] >= 1.0 and 0 < res["after_loop"]["seconds"] < wall
    # Progress carries the loss and the job's ETA as data, not only in the message; the ETA
    # counts the reserve, so it never reaches zero while the loop runs.
    assert ctx.previews and all(v["loss"] > 0 and v["eta"] >= 1 for v in ctx.previews)


def test_missing_or_tampered_model_files_are_refused(trained, tmp_path):
    out, _, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(AppError, match="checksum"):
        Inspector.load(copy, "cpu")
    (copy / "model.safetensors").unlink()
    with pytest.raises(AppError, match="no model.safetensors"):
        Inspector.load(copy, "cpu")
    shutil.copytree(out, tmp_path / "c2")
    (tmp_path / "c2" / "config.json").unlink()
    with pytest.raises(AppError, match="no config.json"):
        Inspector.load(tmp_path / "c2", "cpu")
    (tmp_path / "c3").mkdir()
    (tmp_path / "c3" / "config.json").write_text("{not json")
    with pytest.raises(AppError, match="damaged"):
        Inspector.load(tmp_path / "c3", "cpu")
    # a config.json edited by hand so it no longer matches the weights: a map without its scale
    for n, part in enumerate(("features", "context")):
        shutil.copytree(out, tmp_path / f"c4{n}")
        cfg = json.loads((tmp_path / f"c4{n}" / "config.json").read_text())
        del cfg["map"]["combine"][part]
        (tmp_path / f"c4{n}" / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(AppError, match="do not fit"):
            Inspector.load(tmp_path / f"c4{n}", "cpu")
    # or a heat-map weight for a map it lacks, below zero, or not a number; or a map left out of
    # the score that it lacks
    bad = [{"heat_weights": w} for w in ({"nosuch": 2.0}, {"context": -1.0}, {"context": "3"}, {"context": True}, [2])]
    bad += [{"score_leaves_out": left_out} for left_out in (["nosuch"], "context")]
    bad += [{"context_flips": "yes"}, {"context_logits": 1}]
    for n, entry in enumerate(bad):
        shutil.copytree(out, tmp_path / f"c5{n}")
        cfg = json.loads((tmp_path / f"c5{n}" / "config.json").read_text())
        cfg["map"].update(entry)
        (tmp_path / f"c5{n}" / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(AppError, match="do not fit"):
            Inspector.load(tmp_path / f"c5{n}", "cpu")


def test_bad_training_data_is_clear(tmp_path):
    with pytest.raises(AppError, match="No good images"):
        train.run({"data": str(tmp_path), "out": str(tmp_path / "m"), **FAST}, Ctx())
    (tmp_path / "one").mkdir()
    Image.new("L", (40, 40), 80).save(tmp_path / "one" / "a.png")
    (tmp_path / "one" / "b.png").write_bytes(b"")
    ctx = Ctx()
    with pytest.raises(AppError, match="Only 1 good image"):
        train.run({"data": str(tmp_path / "one"), "out": str(tmp_path / "m"), **FAST}, ctx)
    with pytest.raises(AppError, match="Image size"):
        train.run({"data": str(tmp_path / "one"), "out": str(tmp_path / "m"), **FAST, "image_size": 100}, Ctx())
    with pytest.raises(AppError, match="cannot shrink 64-px images by 3"):
        train.run({"data": str(tmp_path / "one"), "out": str(tmp_path / "m"), **FAST, "image_size": 64,
                   "context_scale": 3}, Ctx())
    assert not (tmp_path / "m").exists()


def _changed(src: Path, dst: Path, fn):
    a = np.asarray(Image.open(src).convert("L"), dtype=np.float32)
    Image.fromarray(np.clip(fn(a), 0, 255).astype(np.uint8)).save(dst)
    return dst


def test_trained_inspector_sums_its_four_maps_on_their_held_out_scales(trained, subset):
    from core.inspect import data as D
    from core.inspect import feature_stats as FS
    from core.inspect import model as M

    out = trained[0]
    cfg = json.loads((out / "config.json").read_text())
    features = cfg["map"]["features"]
    # 64 px images: a 16 x 16 feature grid, as finely divided as the few training images allow
    assert features["cells"] == FS.cells_for(16, features["images"], FS.CHANNELS)
    assert features["channels"] == FS.CHANNELS
    # and the context segmenter's encoder features, with their own pick of channels
    assert cfg["map"]["context_features"]["cells"] == features["cells"]
    assert cfg["context"]["steps_per_step"] == 2
    spreads = cfg["map"]["combine"]
    assert set(spreads) == {"own", "features", "context", "context_features"}
    assert all(s[1] > 0 for s in spreads.values())
    _, tensors = store.load_model(out)
    cells = features["cells"]
    triangle = FS.CHANNELS * (FS.CHANNELS + 1) // 2  # symmetric precision matrices: one triangle stored
    assert tensors["features.precision_upper"].shape == (cells ** 2, triangle)
    assert tensors["context_features.precision_upper"].shape == (cells ** 2, triangle)
    assert not any(k.endswith(".precision") for k in tensors)
    assert not torch.equal(tensors["features.channels"], tensors["context_features.channels"])
    assert any(k.startswith("context.") for k in tensors)
    full = Inspector.load(out, "cpu")
    paths = sorted((subset / "test" / "crack").iterdir())
    rows, maps, _ = full.inspect_paths(paths, keep_maps=True)
    # the same network without the other maps: the own map alone (how the oldest models score)
    own_cfg = {**cfg, "map": {k: v for k, v in cfg["map"].items() if k not in ("features", "context_features", "combine")}}
    own_cfg.pop("context")
    net = M.build(cfg["arch"])
    net.load_state_dict({k: v for k, v in tensors.items()
                         if not k.startswith(("stats.", "features.", "context.", "context_features."))})
    stats = {k[6:]: v for k, v in tensors.items() if k.startswith("stats.")}
    own_only = Inspector(net, own_cfg, torch.device("cpu"), stats)
    _, own_maps, _ = own_only.inspect_paths(paths, keep_maps=True)
    x = torch.from_numpy(np.stack(D.load_batch(paths, cfg["preprocess"])[0]))
    with torch.inference_mode():
        fmap = full._feature_map(net.eval().stage_features(x), x.shape[-2:])
        assert cfg["map"]["context_logits"] is False  # the general part type sums probabilities
        cmap = M.blur(torch.sigmoid(full.context(x)), cfg["map"]["sigma"])[:, 0]
        cfmap = full._feature_map(full.context.stage_features(x), x.shape[-2:], gaussians=full.context_features)
    # the image score sums the maps less the context segmenter's; the heat map sums all four, on
    # the score's scale (heat_to_score)
    assert cfg["map"]["score_leaves_out"] == ["context"]
    assert full.score_maps() == ["own", "features", "context_features"]
    a, b = cfg["map"]["heat_to_score"]
    assert a > 0
    for k, p in enumerate(paths):
        scored = ((torch.from_numpy(own_maps[str(p)]) - spreads["own"][0]) / spreads["own"][1]
                  + (fmap[k] - spreads["features"][0]) / spreads["features"][1]
                  + (cfmap[k] - spreads["context_features"][0]) / spreads["context_features"][1])
        heat = scored + (cmap[k] - spreads["context"][0]) / spreads["context"][1]
        assert torch.allclose(torch.from_numpy(maps[str(p)]), heat * a + b, atol=1e-4)
        assert rows[k]["score"] == pytest.approx(float(scored.max()), abs=1e-4)
    assert len(full.features) == 1 and full.features[0].mean.shape == (cells ** 2, FS.CHANNELS)


def test_models_with_full_precision_matrices_still_load_and_score_the_same(trained, subset, tmp_path):
    """Folders saved before the precision matrices were stored as one triangle."""
    from core.inspect.feature_stats import unpack_symmetric

    out = trained[0]
    cfg, tensors = store.load_model(out)
    old = {}
    for k, v in tensors.items():
        if k.endswith(".precision_upper"):
            prefix = k[: -len("precision_upper")]
            full = unpack_symmetric(v, tensors[prefix + "mean"].shape[-1])
            assert torch.equal(full, full.transpose(1, 2))
            old[prefix + "precision"] = full
        else:
            old[k] = v
    for key in ("files_sha256", "library_versions"):
        cfg.pop(key, None)
    store.save_model(tmp_path / "full", old, cfg)
    assert (out / "model.safetensors").stat().st_size < (tmp_path / "full" / "model.safetensors").stat().st_size
    paths = sorted((subset / "test").rglob("*.jpg"))
    rows_new, maps_new, _ = Inspector.load(out, "cpu").inspect_paths(paths, keep_maps=True)
    rows_old, maps_old, _ = Inspector.load(tmp_path / "full", "cpu").inspect_paths(paths, keep_maps=True)
    assert [r["score"] for r in rows_new] == [r["score"] for r in rows_old]
    assert all(np.array_equal(maps_new[p], maps_old[p]) for p in maps_new)
    # a triangle of the wrong length is an inconsistent folder, not a crash
    bad = dict(tensors)
    bad["features.precision_upper"] = bad["features.precision_upper"][:, :-1]
    store.save_model(tmp_path / "bad", bad, cfg)
    with pytest.raises(AppError, match="do not fit"):
        Inspector.load(tmp_path / "bad", "cpu")


def test_models_from_before_the_context_features_still_load_and_score(trained, subset, tmp_path):
    """Three maps (own, VAE features, context): the same map less the fourth term."""
    from core.inspect import data as D

    out = trained[0]
    cfg, tensors = store.load_model(out)
    cfg["map"].pop("context_features")
    cf = cfg["map"]["combine"].pop("context_features")
    a, b = cfg["map"].pop("heat_to_score")  # they summed the same maps for score and heat map
    cfg["map"].pop("score_leaves_out")
    for key in ("files_sha256", "library_versions"):
        cfg.pop(key, None)
    store.save_model(tmp_path / "three", {k: v for k, v in tensors.items() if not k.startswith("context_features.")}, cfg)
    three = Inspector.load(tmp_path / "three", "cpu")
    assert three.context is not None and three.context_features is None
    paths = sorted((subset / "test" / "crack").iterdir())
    _, three_maps, _ = three.inspect_paths(paths, keep_maps=True)
    new = Inspector.load(out, "cpu")
    _, new_maps, _ = new.inspect_paths(paths, keep_maps=True)
    x = torch.from_numpy(np.stack(D.load_batch(paths, cfg["preprocess"])[0]))
    with torch.inference_mode():
        term = (new._feature_map(new.context.stage_features(x), x.shape[-2:], gaussians=new.context_features)
                - cf[0]) / cf[1]
    for k, p in enumerate(paths):
        new_sum = (torch.from_numpy(new_maps[str(p)]) - b) / a
        assert torch.allclose(torch.from_numpy(three_maps[str(p)]), new_sum - term[k], atol=1e-4)
    # context features without the context segmenter they describe: an inconsistent folder
    cfg["map"]["context_features"] = {"cells": 1}
    cfg["map"]["combine"]["context_features"] = cf
    cfg.pop("context")
    store.save_model(tmp_path / "broken", {k: v for k, v in tensors.items() if not k.startswith("context.")}, cfg)
    with pytest.raises(AppError, match="do not fit"):
        Inspector.load(tmp_path / "broken", "cpu")


def test_models_from_before_the_context_map_still_load_and_score(trained, subset, tmp_path):
    """Their config keeps the maps' scales with the feature statistics and has no context part."""
    out = trained[0]
    cfg, tensors = store.load_model(out)
    combine = cfg["map"].pop("combine")
    cfg["map"]["features"]["combine"] = {"own": combine["own"], "features": combine["features"]}
    cfg.pop("context")
    cfg["map"].pop("context_features")
    a, b = cfg["map"].pop("heat_to_score")
    cfg["map"].pop("score_leaves_out")
    for key in ("files_sha256", "library_versions"):
        cfg.pop(key, None)
    store.save_model(tmp_path / "old", {k: v for k, v in tensors.items()
                                        if not k.startswith(("context.", "context_features."))}, cfg)
    old = Inspector.load(tmp_path / "old", "cpu")
    assert old.context is None
    paths = sorted((subset / "test" / "crack").iterdir())
    _, old_maps, _ = old.inspect_paths(paths, keep_maps=True)
    new = Inspector.load(out, "cpu")
    _, new_maps, _ = new.inspect_paths(paths, keep_maps=True)
    from core.inspect import data as D
    from core.inspect import model as M

    x = torch.from_numpy(np.stack(D.load_batch(paths, cfg["preprocess"])[0]))
    with torch.inference_mode():
        term = (M.blur(torch.sigmoid(new.context(x)), cfg["map"]["sigma"])[:, 0] - combine["context"][0]) / combine["context"][1]
        cf = combine["context_features"]
        term += (new._feature_map(new.context.stage_features(x), x.shape[-2:], gaussians=new.context_features)
                 - cf[0]) / cf[1]
    for k, p in enumerate(paths):  # the same map less the context segmenter's two terms
        new_sum = (torch.from_numpy(new_maps[str(p)]) - b) / a
        assert torch.allclose(torch.from_numpy(old_maps[str(p)]), new_sum - term[k], atol=1e-4)


def test_good_parts_stay_pass_under_lighting_drift_and_small_shifts(trained, subset, tmp_path):
    out, _, _ = trained
    insp = Inspector.load(out, "cpu")
    goods = sorted((subset / "test" / "good").iterdir())
    rows, _, _ = insp.inspect_paths(goods)
    passing = [Path(r["path"]) for r in rows if r["verdict"] == "PASS"]
    assert len(passing) >= 3, rows
    variants = {
        "darker": lambda a: a * 0.75,
        "brighter": lambda a: a * 1.15 + 12,
        "low_contrast": lambda a: (a - a.mean()) * 0.7 + a.mean(),
        "shift": lambda a: np.roll(a, (2, -3), axis=(0, 1)),
    }
    for name, fn in variants.items():
        files = [_changed(p, tmp_path / f"{name}_{p.stem}.png", fn) for p in passing]
        changed, _, _ = insp.inspect_paths(files)
        assert all(r["verdict"] == "PASS" for r in changed), (name, changed)


@pytest.mark.parametrize("shape, sigma", [((2, 3, 40, 70), 2.0), ((2, 1, 5, 64), 2.0), ((1, 2, 7, 3), 1.0)])
def test_blur_equals_the_reflect_padded_convolution(shape, sigma):
    """The matrix form of the blur against the separable convolution it stands for, including
    a side shorter than the kernel (left unblurred); matrices first built under inference mode
    still take part in training's autograd."""
    import torch.nn.functional as F

    from core.inspect import model as M

    def reference(x):
        k = M.gaussian_kernel(sigma)
        r, c = k.numel() // 2, x.shape[1]
        if x.shape[-1] - 1 >= r:
            x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        if x.shape[-2] - 1 >= r:
            x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
        return x

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(M.blur(x, sigma), reference(x), atol=1e-6)
    y = x.clone().requires_grad_(True)
    M.blur(y, sigma).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


def test_position_sd_is_widened_where_the_border_rings_have_longer_tails():
    """Good maps whose outer two rings have the same sd as the rest but rare high pixels (as a
    network's map has where its convolutions see padding): the factors widen those rings' sd until
    their 99.9th percentile matches the inside's, leave the inside alone, and leave a map without
    such a tail (almost) as it is."""
    from core.inspect.score import border_distance, border_tail_factors

    g = torch.Generator().manual_seed(0)
    n, size, depth = 400, 48, 6
    ring = border_distance(size, size, depth)
    assert ring[0, 0] == 0 and ring[2, 20] == 2 and ring[24, 24] == depth and ring[size - 1, 30] == 0
    maps = torch.randn(n, size, size, generator=g)
    outer = ring <= 1
    spikes = (torch.rand(n, size, size, generator=g) < 0.004) & outer
    maps = torch.where(spikes, maps.abs() * 6.0, maps)
    mean, sd = maps.mean(0), maps.std(0)
    factors = border_tail_factors(maps, mean, sd, depth)
    assert factors.shape == (size, size)
    assert factors[outer].min() > 1.5
    assert torch.allclose(factors[ring == depth], torch.ones(()))
    z = (maps - mean) / (sd * factors)
    tail = [torch.quantile(z[:, ring == k].flatten(), 0.999) for k in (0, 1, depth)]
    assert abs(tail[0] / tail[2] - 1) < 0.02 and abs(tail[1] / tail[2] - 1) < 0.02
    plain = torch.randn(n, size, size, generator=g)
    even = border_tail_factors(plain, plain.mean(0), plain.std(0), depth)
    assert (even - 1).abs().max() < 0.15


def test_calibration_and_sensitivity():
    cal = calibrate([1.0, 1.1, 0.9, 1.0])
    assert cal["method"] == "good_holdout" and cal["threshold"] > 1.1
    # Three held-out images that agree say little about the next good part: the bound widens.
    few, many = calibrate([1.0, 1.1, 0.9]), calibrate([1.0, 1.1, 0.9] * 30)
    assert few["threshold"] > 1.0 + 20 * 0.1 and 1.0 + 3 * 0.08 < many["threshold"] < 1.0 + 3.3 * 0.09
    assert normalised([cal["threshold"]], cal)[0] == pytest.approx(0.5)
    assert effective_threshold(cal, 0.9) < cal["threshold"] < effective_threshold(cal, 0.1)
    f1 = calibrate([1.0, 1.1, 0.9], [3.0, 2.0, 0.95], [1, 1, 1])
    assert f1["method"] == "f1_optimal" and 1.1 <= f1["threshold"] < 2.0
    with pytest.raises(AppError):
        effective_threshold(cal, 1.5)


def test_best_f1_is_the_highest_f1_of_any_threshold():
    from sklearn.metrics import f1_score

    from core.inspect.metrics import best_f1

    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        y = rng.integers(0, 2, n)
        y[0] = 1
        s = np.round(rng.normal(size=n) + y * rng.uniform(0, 2), 1)  # rounded: ties, as real scores have
        f1, threshold = best_f1(y, s)
        every = [f1_score(y, s >= t) for t in np.unique(s)]
        assert f1 == pytest.approx(max(every)) and f1_score(y, s >= threshold) == pytest.approx(f1)
    assert best_f1([0, 0], [1.0, 2.0]) == (None, None)  # no defects: nothing to catch
    # The labelled calibration puts its threshold just under the best one
    good, bad = [1.0, 1.1, 0.9, 2.5], [3.0, 2.0, 0.95]
    f1, threshold = best_f1([0] * 4 + [1] * 3, good + bad)
    assert calibrate(good, bad, [1, 1, 1])["threshold"] == pytest.approx(threshold - 1e-9)


def test_a_held_out_score_far_above_the_rest_is_left_out_of_the_threshold():
    rng = np.random.default_rng(0)
    good = list(rng.normal(1.5, 0.3, 99))
    plain = calibrate(good)
    assert plain["left_out"] == [] and plain["threshold"] == pytest.approx(np.mean(good) + plain["sd_multiple"]
                                                                          * np.std(good, ddof=1))
    # One odd good part (a circuit board that scored 13.3 where the rest stayed under 2.5) no longer
    # lifts the threshold above nearly every defect.
    odd = calibrate(good[:40] + [13.3] + good[40:])
    assert odd["left_out"] == [40] and odd["left_out_scores"] == [13.3]
    assert odd["threshold"] == pytest.approx(plain["threshold"]) and odd["n_good"] == 100
    assert calibrate(good[:18] + [13.3])["left_out"] == []  # too few (19) to call one odd
    # A heavy tail is not an outlier: at most 1 % of the held-out images are ever left out.
    tail = calibrate(list(rng.lognormal(0.0, 1.5, 200)))
    assert len(tail["left_out"]) <= 2
    # Labelled images set the threshold where F1 is best; nothing is left out there.
    assert calibrate(good + [13.3], [3.0, 4.0], [1, 1])["left_out"] == []


def test_training_names_the_held_out_good_images_left_out_of_the_threshold(tmp_path, shared_data):
    goods = sorted((shared_data / "qa" / "magnetic_tile" / "train" / "good").iterdir())[:40]
    folder = tmp_path / "data" / "train" / "good"
    folder.mkdir(parents=True)
    # The VAE's own map alone: with several maps the held-out images also set the maps' scales, and a
    # model this small lets one odd image's pixels widen them until it looks ordinary.
    params = {"data": str(tmp_path / "data"), "out": str(tmp_path / "m"), "seed": 5, "holdout": 0.5, "views": False,
              "feature_stats": False, "context": False, **FAST}
    # The training's own held-out draw (train.run): the first image it holds out becomes the odd one.
    odd_at = torch.randperm(40, generator=torch.Generator().manual_seed(params["seed"] + 1)).tolist()[0]
    for i, path in enumerate(goods):
        image = np.asarray(Image.open(path).convert("L"))
        if i == odd_at:  # a "good" image that is nothing like a tile: horizontal stripes
            image = (np.indices(image.shape)[0] // 4 % 2 * 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    ctx = Ctx()
    train.run(params, ctx)
    cal = json.loads((tmp_path / "m" / "config.json").read_text())["calibration"]
    odd_path = str(folder / f"{odd_at:02d}.png")
    assert cal["n_good"] == 20 and cal["left_out_images"] == [odd_path]
    assert cal["threshold"] < cal["left_out_scores"][0]
    # The training log (which `lienzo inspect train` prints on stderr) names it
    assert [line for line in ctx.logs if "left out" in line] == [f"warning: the held-out good image {odd_path} scored "
                                      f"{cal['left_out_scores'][0]:.4g}, far above the others, and was left out "
                                      "of the threshold; check that it really is good"]


def test_evaluate_reports_all_metrics(trained, subset):
    from core.inspect.evaluate import evaluate

    res = evaluate(Inspector.load(trained[0], "cpu"), subset)
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1", "threshold", "pass_rate_good", "catch_rate_defect"):
        assert res[key] is not None, key
    assert set(res["per_defect"]) == {"blowhole", "crack"}
    assert 0 <= res["pixel_auroc"] <= 1


def _cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "desktop.launcher", "inspect", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_cli_train_eval_run_with_project(subset, trained, tmp_path):
    from core.project import Project

    proj = tmp_path / "qa.lienzo"
    model = tmp_path / "cli_model"
    r = _cli("train", subset, "--out", model, "--image-size", 64, "--patch", 32, "--steps", 3, "--batch", 4,
             "--seed", 0, "--device", "cpu", "--json", "--project", proj, "--context-features")
    assert r.returncode == 0, r.stderr
    assert json.loads((model / "config.json").read_text())["map"]["context_features"]["channels"] > 0
    out = json.loads(r.stdout)
    assert out["steps"] == 3 and out["model_id"] and "loss" in r.stderr
    r = _cli("eval", trained[0], subset, "--json", "--project", proj)
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    for key in ("image_auroc", "pixel_auroc", "f1", "threshold", "pass_rate_good", "catch_rate_defect", "per_defect"):
        assert key in ev
    heat = tmp_path / "heat"
    crack = sorted((subset / "test" / "crack").iterdir())[0]
    r = _cli("run", trained[0], crack, subset / "test" / "good", "--heatmaps", heat, "--json", "--project", proj)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["results"]
    assert len(res) == 7 and {"path", "score", "verdict"} <= set(res[0])
    assert len(list(heat.glob("*.png"))) == 7
    with Image.open(next(heat.glob("*.png"))) as im:
        assert im.mode == "RGB"
    with Project.open(proj, read_only=True) as p:
        runs = {r["kind"]: r for r in p.list_runs()}
        assert {"inspect.train", "inspect.eval", "inspect.run"} <= set(runs)
        assert runs["inspect.run"]["status"] == "done"
        rows = p.inspection_results(runs["inspect.run"]["id"])
        assert len(rows) == 7 and all(r["heatmap_image_id"] for r in rows)
        img = p.get_image(rows[0]["heatmap_image_id"])
        assert img["origin"] == "generated" and img["params"]["kind"] == "inspection_heatmap"
        assert len(p.inspection_results(runs["inspect.eval"]["id"])) == 12
        from core.inspect import session

        # registered as the app lists its image inspectors, so the app offers it too
        assert len(p.list_models(session.MODEL_KIND)) == len(p.list_models()) == 2  # trained and used

    # An operator moves the threshold in the app (it goes to the project's audit trail): the command
    # line then gives the app's verdicts for that project, unless --sensitivity asks for the model's.
    from core.inspect import session

    scores = sorted(r["score"] for r in res)
    moved = (scores[2] + scores[3]) / 2
    with Project.open(proj) as p:
        model = next(m for m in p.list_models() if m["path"] == str(Path(trained[0]).resolve()))
        session.set_threshold(p, model, moved, user="qa")
    r = _cli("run", trained[0], crack, subset / "test" / "good", "--json", "--project", proj)
    out = json.loads(r.stdout)
    assert out["threshold_source"] == "project" and out["threshold"] == pytest.approx(moved)
    assert [x["verdict"] for x in out["results"]] == session.verdicts([x["score"] for x in out["results"]], moved)
    assert sum(x["verdict"] == "FAIL" for x in out["results"]) == 4
    r = _cli("run", trained[0], crack, "--json", "--project", proj, "--sensitivity", "0.5")
    out = json.loads(r.stdout)
    assert out["threshold_source"] == "model" and out["threshold"] != pytest.approx(moved)


def test_cli_train_takes_the_part_type(subset, tmp_path):
    model = tmp_path / "boards"
    r = _cli("train", subset, "--out", model, "--image-size", 64, "--patch", 32, "--steps", 2, "--batch", 4,
             "--device", "cpu", "--part-type", "patterned")
    assert r.returncode == 0, r.stderr
    config = json.loads((model / "config.json").read_text())
    assert config["training"]["part_type"] == "patterned" and "context" not in config
    assert "features" not in config["map"]


def test_cli_run_colours_heat_maps_by_the_threshold_its_verdicts_use(trained, subset, tmp_path):
    # With labelled images the threshold sits among this small model's scores (from 6 held-out
    # good images alone it lies far above them), so moving it changes what the heat map marks.
    model = tmp_path / "m"
    shutil.copytree(trained[0], model)
    assert _cli("calibrate", model, subset, "--device", "cpu").returncode == 0
    calibration = json.loads((model / "config.json").read_text())["calibration"]
    blowhole = sorted((subset / "test" / "blowhole").iterdir())
    red = {}
    for sensitivity in (0.5, 1.0):
        heat = tmp_path / str(sensitivity)
        r = _cli("run", model, *blowhole, "--heatmaps", heat, "--json", "--sensitivity", sensitivity)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["threshold"] == pytest.approx(effective_threshold(calibration, sensitivity))
        assert out["sensitivity"] == sensitivity
        red[sensitivity] = 0
        for png in heat.glob("*.png"):
            rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
            red[sensitivity] += int(((rgb[..., 0] - rgb[..., 2]) > 40).sum())  # overlay (the image is grey)
    # A lower threshold (higher sensitivity) marks more of the images, as its verdicts do.
    assert red[1.0] > red[0.5]


def test_cli_errors_are_two_lines_and_exit_2(tmp_path):
    r = _cli("train", tmp_path, "--out", tmp_path / "m", "--steps", 1)
    assert r.returncode == 2 and r.stderr.startswith("error: No good images") and "hint:" in r.stderr
    r = _cli("run", tmp_path / "missing_model", tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_cli_run_refuses_an_empty_path(trained, tmp_path):
    # An empty argument would be the current folder, and everything under it inspected.
    r = _cli("run", trained[0], "", "--heatmaps", tmp_path / "heat")
    assert r.returncode == 2 and "An empty path was given" in r.stderr
    assert not (tmp_path / "heat").exists()


def test_gpu_script_runs_on_cpu():
    r = subprocess.run([sys.executable, "bench/inspect_gpu.py", "--steps", "2", "--size", "64", "--batch", "2",
                        "--device", "cpu", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["train_images_per_s"] > 0 and res["infer_images_per_s"] > 0 and res["device"].startswith("cpu")


def test_device_check_script_runs_on_cpu(subset, tmp_path):
    r = subprocess.run([sys.executable, "bench/inspect_device_check.py", subset, "--device", "cpu", "--steps", "2",
                        "--image-size", "64", "--out", tmp_path], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["train"]["steps"] == 2 and res["eval_device"]["pixel_auroc"] is not None
    assert res["run"]["images"] == res["run"]["heatmaps"] == 12
    assert res["run"]["max_score_difference"] == 0 and res["run"]["verdicts_agree"] == 12


def test_settings_sweep_trains_and_evaluates_each_variant(subset, tmp_path):
    variants = tmp_path / "variants.json"
    variants.write_text(json.dumps({"small": {"steps": 2, "image_size": 64, "patch": 32, "batch": 4},
                                    "broken": {"steps": 2, "image_size": 60}}))
    r = subprocess.run([sys.executable, "bench/inspect_sweep.py", str(variants), "--data", str(subset),
                        "--device", "cpu", "--jobs", "2", "--json", str(tmp_path / "out.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    results = {v["name"]: v for v in json.loads((tmp_path / "out.json").read_text())}
    assert results["small"]["steps"] == 2 and 0 <= results["small"]["image_auroc"] <= 1
    assert set(results["small"]["per_defect"]) == {"blowhole", "crack"}
    assert "Image size 60 is not supported" in results["broken"]["error"]  # reported, not fatal


def test_benchmark_chooses_maps_on_one_half_and_measures_on_the_other(trained, subset, monkeypatch):
    import importlib.util

    from core.inspect import mapchoice

    spec = importlib.util.spec_from_file_location("inspect_images", ROOT / "bench" / "inspect_images.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(mapchoice, "MIN_EACH", 2)  # the subset's halves hold 3 good and 2 defective images
    insp = Inspector.load(trained[0], "cpu")
    before = json.dumps(insp.config, sort_keys=True)
    half = bench.labelled_half(insp, subset, seed=0)
    assert (half["images_choosing"], half["images_measuring"]) == (5, 7)
    assert set(half["maps"]) <= set(insp.available_maps())
    for key in ("all_maps", "chosen_maps"):
        assert 0 <= half[key]["image_auroc"] <= 1 and half[key]["pixel_auroc"] is not None
    assert json.dumps(insp.config, sort_keys=True) == before  # the model is left as it was


def test_benchmark_compares_pipeline_and_bare_forward_over_repeated_passes(trained, subset):
    import importlib.util

    spec = importlib.util.spec_from_file_location("inspect_images", ROOT / "bench" / "inspect_images.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    insp = Inspector.load(trained[0], "cpu")
    arrays, _, _ = D.load_batch([i.path for i in D.scan(subset).test], insp.prep)
    x = torch.from_numpy(np.stack([a for a in arrays if a is not None]))
    calls, real = {False: [], True: []}, insp.score_tensor

    def counted(xb, keep_maps=True, views=None):
        calls[keep_maps].append(xb.shape[0])
        return real(xb, keep_maps=keep_maps, views=views)

    insp.score_tensor = counted
    rates = bench.compared_rates(insp, x, seconds=0.3, rounds=3)
    assert set(rates) == {"infer_images_per_s_bare_forward", "infer_images_per_s_pipeline", "infer_images_per_s_bare_heat",
                          "infer_images_per_s_pipeline_heat", "infer_images_per_s_vae_only", "pipeline_vs_bare",
                          "pipeline_vs_bare_heat", "pipeline_vs_vae_only"}
    assert all(v > 0 for v in rates.values())
    # The pipeline scores one batch at a time (in turn with the bare forward), with heat maps and
    # without: a warm-up, then whole passes over x, at least one per round.
    batches = math.ceil(x.shape[0] / insp.batch)
    assert calls[False] == calls[True]
    sizes = calls[False]
    assert max(sizes) <= insp.batch and (len(sizes) - 1) % batches == 0 and len(sizes) - 1 >= 3 * batches
    assert sum(sizes[1:]) == (len(sizes) - 1) // batches * x.shape[0]
    # Each round lasted about 0.3 s of pipeline time (the pipeline's share of it, at its median rate).
    assert sum(sizes[1:]) / rates["infer_images_per_s_pipeline"] >= 3 * 0.3 * 0.5


def test_feature_statistics_comparison_runs_on_a_trained_model(trained, subset):
    out, _, _ = trained
    r = subprocess.run([sys.executable, "bench/inspect_feature_stats.py", str(out), str(subset), "--cells", "1", "4"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if "AUROC" in line]
    assert len(lines) == 3 and "whole map" in lines[0] and "4x4 cells" in lines[2]


def test_map_sums_comparison_runs_on_a_trained_model(trained, subset, tmp_path):
    out, _, _ = trained
    r = subprocess.run([sys.executable, "bench/inspect_map_sums.py", str(out), str(subset), "--json", str(tmp_path / "s.json")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr  # the held-out images were drawn as training drew them
    res = json.loads((tmp_path / "s.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    maps = res["maps"]
    assert len(res["sums"]) == 2 ** len(maps) - 1 and res["held_out"] == cfg["training"]["holdout_images"]
    # The sum the model scores with ranks the test images as the model's own scores do
    insp = Inspector.load(out, "cpu")
    from core.inspect.evaluate import evaluate

    assert res["sums"][res["score_sums"]] == pytest.approx(evaluate(insp, subset, with_aupro=False)["image_auroc"],
                                                          abs=1e-6)
    assert "<- the model scores this" in r.stdout and res["image_level"]


def test_device_choice_and_oom_guard():
    from core import device

    assert device.physical_cores() >= 1
    assert device.choose_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(AppError, match="No CUDA"):
            device.choose_device("cuda")
    with pytest.raises(AppError, match="GPU memory"):
        with device.oom_guard("Test"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
    with pytest.raises(AppError, match="Unknown device"):
        device.choose_device("tpu")


def test_plain_folder_with_labelled_defects_calibrates_for_f1(subset, tmp_path):
    from core.inspect.evaluate import evaluate

    data = tmp_path / "plain"
    (data / "good").mkdir(parents=True)
    (data / "crack").mkdir()
    for p in sorted((subset / "train" / "good").iterdir())[:10]:
        shutil.copy(p, data / "good")
    for p in sorted((subset / "test" / "crack").iterdir()):
        shutil.copy(p, data / "crack")
    out = tmp_path / "m"
    res = train.run({"data": str(data), "out": str(out), **FAST, "steps": 4}, Ctx())
    assert res["config"]["calibration"]["method"] == "f1_optimal"
    ev = evaluate(Inspector.load(out, "cpu"), data, with_aupro=False)
    assert ev["n_good"] == 10 and ev["n_defect"] == 3 and ev["pixel_auroc"] is None


def test_cli_calibrate_sets_f1_threshold_and_keeps_weights_valid(trained, subset, tmp_path, capsys):
    from desktop.launcher import main

    copy = tmp_path / "m"
    shutil.copytree(trained[0], copy)
    # Before: the threshold from held-out good images; eval says how far its F1 is from the best
    assert main(["inspect", "eval", str(copy), str(subset), "--json", "--device", "cpu"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["calibration_method"] == "good_holdout" and before["f1_max"] >= before["f1"]
    assert main(["inspect", "eval", str(copy), str(subset), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert f"best F1 on these images {before['f1_max']:.3f}, at threshold {before['f1_max_threshold']:.4g}" in text
    assert ("where F1 is best on labelled images" in text) == (before["f1_max"] - before["f1"] >= 0.05)
    assert main(["inspect", "calibrate", str(copy), str(subset), "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    cfg = json.loads((copy / "config.json").read_text())
    assert out["method"] == "f1_optimal" == cfg["calibration"]["method"]
    assert cfg["calibration"]["threshold"] == out["threshold"]
    Inspector.load(copy, "cpu")  # still passes the checksum
    # After: on the images it was calibrated on, the model's F1 is the best one
    assert main(["inspect", "eval", str(copy), str(subset), "--json", "--device", "cpu"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["f1"] == pytest.approx(after["f1_max"]) and after["calibration_method"] == "f1_optimal"


def _labelled(insp, subset):
    from core.inspect.evaluate import eval_items, load_labelled

    x, items, masks, has_masks, _, _ = load_labelled(insp, eval_items(D.scan(subset)))
    assert has_masks
    return x, np.array([0 if i.is_good else 1 for i in items]), masks


def _use(maps):
    """What config.json keeps of a choice of maps for the four-map model: none when all are chosen."""
    return None if len(maps) == 4 else maps


def test_labelled_images_choose_the_maps_that_are_summed(trained, subset):
    from core.inspect import mapchoice
    from core.inspect.metrics import pixel_auroc, roc_auc

    insp = Inspector.load(trained[0], "cpu")
    x, labels, masks = _labelled(insp, subset)
    choice = mapchoice.choose_maps(insp, x, labels, masks)
    rows = choice["subsets"]
    assert len(rows) == 15 and choice["pixels"] and (choice["n_good"], choice["n_defect"]) == (6, 6)
    assert rows[0]["maps"] == choice["use"]
    # Kept: all the maps, or a subset that beat them in most resamples; none of those scores higher
    eligible = [r for r in rows if len(r["maps"]) == 4 or r["beats_all_maps"] >= mapchoice.CONFIDENCE]
    assert rows[0] in eligible and all(rows[0]["score"] >= r["score"] - 1e-4 for r in eligible)
    assert next(r for r in rows if len(r["maps"]) == 4)["beats_all_maps"] == 0.0
    combine = insp.config["map"]["combine"]
    with torch.inference_mode():
        parts = insp.map_parts(x)
    scaled = {k: (m - combine[k][0]) / combine[k][1] for k, m in parts.items()}
    for row in rows:  # each row measures the sum of its maps on their held-out scales
        total = sum(scaled[k] for k in row["maps"])
        # the image score as the model would have it: without the context map, unless it is alone
        scored = [k for k in row["maps"] if k != "context"] or ["context"]
        score_map = sum(scaled[k] for k in scored)
        assert row["image_auroc"] == pytest.approx(roc_auc(labels, score_map.flatten(1).amax(1).numpy()))
        assert row["pixel_auroc"] == pytest.approx(pixel_auroc(total.half().float().numpy(), masks),
                                                               abs=1e-4)
        assert row["score"] == pytest.approx(row["image_auroc"] + row["pixel_auroc"])

    mapchoice.apply_choice(insp, ["context_features", "context", "features", "own"])
    assert "use" not in insp.config["map"]  # all of them is no choice
    mapchoice.apply_choice(insp, ["context", "own"])
    assert insp.maps_in_use() == ["own", "context"] and insp.score_maps() == ["own"]
    scores, maps = insp.score_tensor(x)
    a, b = insp.config["map"]["heat_to_score"]
    assert torch.allclose(maps, (scaled["own"] + scaled["context"]) * a + b, atol=1e-5)
    assert torch.allclose(scores, scaled["own"].flatten(1).amax(1))
    mapchoice.apply_choice(insp, ["context"])  # alone, it is the score too
    scores, maps = insp.score_tensor(x)
    assert torch.allclose(maps, scaled["context"], atol=1e-5) and torch.allclose(scores, maps.flatten(1).amax(1))
    with pytest.raises(AppError, match="Unknown anomaly maps"):
        mapchoice.apply_choice(insp, ["own", "colour"])
    with pytest.raises(AppError, match="No anomaly map was chosen"):
        mapchoice.apply_choice(insp, [])
    insp.fit_combination(x[labels == 0])  # new scales: the old choice no longer holds
    assert "use" not in insp.config["map"] and len(insp.maps_in_use()) == 4


def test_a_subset_of_maps_is_kept_only_where_it_beats_all_of_them_in_most_resamples():
    from sklearn.metrics import roc_auc_score

    from core.inspect import mapchoice

    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], [60, 40])
    shift = labels * 1.5
    all_maps = rng.normal(size=100) + shift
    clearly_better = rng.normal(size=100) * 0.3 + shift
    as_good = all_maps + rng.normal(size=100) * 0.05  # the same ranking, give or take a pair
    images = np.stack([clearly_better, as_good, all_maps])  # the last row: all the maps
    assert mapchoice._ranks_auroc(labels[None].astype(float), images) == pytest.approx(
        [roc_auc_score(labels, row) for row in images])
    beats = mapchoice._share_beating_all(labels, images)
    assert beats[0] >= mapchoice.CONFIDENCE and beats[1] < mapchoice.CONFIDENCE and beats[2] == 0
    assert np.array_equal(beats, mapchoice._share_beating_all(labels, images))  # seeded
    # Five of each: one lucky pair does not make a subset surely better
    few = np.r_[0:5, 60:65]
    lucky = all_maps[few].copy()
    worst_defect = few[5 + int(np.argmin(all_maps[few][5:]))]
    lucky[few.tolist().index(worst_defect)] += 5.0
    assert roc_auc_score(labels[few], lucky) > roc_auc_score(labels[few], all_maps[few])
    assert mapchoice._share_beating_all(labels[few], np.stack([lucky, all_maps[few]]))[0] < mapchoice.CONFIDENCE
    # pixels count too: a subset whose maps find the defects' pixels beats all the maps there
    masks = np.zeros((100, 8, 8), bool)
    masks[labels == 1, 2:5, 2:5] = True
    grids_all = torch.from_numpy(rng.normal(size=(100, 8, 8)).astype(np.float16))
    grids_sharp = grids_all.clone()
    grids_sharp[torch.from_numpy(masks)] += 2.0
    same_images = np.stack([all_maps, all_maps])
    beats = mapchoice._share_beating_all(labels, same_images, [grids_sharp, grids_all], masks)
    assert beats[0] == 1.0
    # What the user is told when a higher-scoring subset was not kept
    from core.inspect.maps import unsure_choice_note

    kept = {"maps": ["own", "features"], "score": 1.8, "beats_all_maps": 0.0}
    higher = {"maps": ["own"], "score": 1.9, "beats_all_maps": 0.62}
    assert mapchoice.higher_not_kept([kept, higher]) == {"maps": ["own"], "beats_all_maps": 0.62, "needs": 0.9}
    assert unsure_choice_note(mapchoice.higher_not_kept([kept, higher])) == (
        "own scored higher on these images but beat all the maps in only 62% of resamples (needs 90%): "
        "label more images to choose it surely.")
    assert mapchoice.higher_not_kept([higher | {"beats_all_maps": 0.95}, kept]) is None
    assert unsure_choice_note(None) == ""


def test_choosing_maps_needs_enough_labelled_images_and_more_than_one_map(trained, subset):
    from core.inspect import mapchoice

    insp = Inspector.load(trained[0], "cpu")
    x, labels, masks = _labelled(insp, subset)
    few = np.r_[np.where(labels == 0)[0][:4], np.where(labels == 1)[0]]
    with pytest.raises(AppError, match="at least 5 good and 5 defective .* 4 good and 6 defective"):
        mapchoice.choose_maps(insp, x[few], labels[few], masks[few])
    choice = mapchoice.choose_maps(insp, x, labels)  # without masks: image AUROC alone
    assert not choice["pixels"] and all(r["pixel_auroc"] is None for r in choice["subsets"])
    insp.features = insp.context = insp.context_features = None
    with pytest.raises(AppError, match="single anomaly map"):
        mapchoice.choose_maps(insp, x, labels)


def test_cli_calibrate_can_choose_the_maps_and_the_model_keeps_them(trained, subset, tmp_path, capsys):
    from core.inspect.evaluate import evaluate
    from desktop.launcher import main

    copy = tmp_path / "m"
    shutil.copytree(trained[0], copy)
    text_copy = tmp_path / "text"
    shutil.copytree(trained[0], text_copy)
    assert main(["inspect", "calibrate", str(text_copy), str(subset), "--choose-maps", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    subsets = [line for line in lines if "image AUROC" in line]
    # every subset but all four maps says how often it beat them
    assert len(subsets) == 15 and sum("of resamples" not in line for line in subsets) == 1
    assert any(line.startswith("maps chosen: ") for line in lines)
    assert main(["inspect", "calibrate", str(copy), str(subset), "--choose-maps", "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    cfg = json.loads((copy / "config.json").read_text())
    assert cfg["map"].get("use") == _use(out["maps"]) and out["maps"] == out["subsets"][0]["maps"]
    insp = Inspector.load(copy, "cpu")
    ev = evaluate(insp, subset, with_aupro=False)
    assert ev["maps"] == out["maps"]
    labels = [0 if i.is_good else 1 for i in ev["_items"]]
    good = [s for s, y in zip(ev["_scores"], labels) if y == 0]
    bad = [s for s, y in zip(ev["_scores"], labels) if y == 1]
    # the threshold is the F1-optimal one on the chosen maps' scores
    assert out["threshold"] == pytest.approx(calibrate(good, bad, [1] * len(bad))["threshold"])
    # and the heat map is on the chosen score's scale: its peaks on the labelled good images have
    # the mean and spread of their scores
    assert ("heat_to_score" in cfg["map"]) == (insp.score_maps() != insp.maps_in_use())
    x, labels, _ = _labelled(insp, subset)
    scores, heat = insp.score_tensor(x[labels == 0])
    peaks = heat.flatten(1).amax(1)
    assert float(peaks.mean()) == pytest.approx(float(scores.mean()), abs=1e-4)
    assert float(peaks.std()) == pytest.approx(float(scores.std()), rel=1e-3)
    cfg["map"]["use"] = ["own", "colour"]
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AppError, match="do not fit"):
        Inspector.load(copy, "cpu")


def test_a_folder_recalibrated_later_reaches_the_project_and_old_operator_thresholds_lapse(
        trained, subset, tmp_path, capsys):
    from core.inspect import report, session
    from core.project import Project
    from desktop.launcher import main

    copy, proj = tmp_path / "m", tmp_path / "qa.lienzo"
    shutil.copytree(trained[0], copy)
    crack = sorted((subset / "test" / "crack").iterdir())
    assert main(["inspect", "run", str(copy), *map(str, crack), "--json", "--project", str(proj)]) == 0
    capsys.readouterr()
    with Project.open(proj) as p:
        (model,) = p.list_models(session.MODEL_KIND)
        session.set_threshold(p, model, 1e6, user="qa")  # on the scale of all four maps
        assert session.current_threshold(p, model) == 1e6

    # Calibrated on the folder alone, other maps chosen: the project's copy is stale until used.
    assert main(["inspect", "calibrate", str(copy), str(subset), "--choose-maps", "--json", "--device", "cpu"]) == 0
    chosen = json.loads(capsys.readouterr().out)
    assert len(chosen["maps"]) < 4  # the seed makes it choose fewer maps than the model has
    folder = json.loads((copy / "config.json").read_text())
    with Project.open(proj) as p:
        assert p.get_model(model["id"])["config"]["calibration"] != folder["calibration"]
        runner = JobRunner(p)
        try:
            handle = runner.submit(session.inspect_job, {"model_id": model["id"], "paths": [str(c) for c in crack]},
                                   kind="inspect")
            assert handle.wait(120) and handle.status == "done", handle.error
        finally:
            runner.shutdown()
        synced = p.get_model(model["id"])
        # the run scored before the new maps is marked as such, in the report too; the new one is not
        before = p.list_runs("inspect.run")[0]["id"]
        assert session.scored_before_map_change(p, synced, before)
        assert not session.scored_before_map_change(p, synced, handle.result["run_id"])
        assert "scored before the model" in report.render_html(report.report_data(p, before, with_images=False))[0]
        assert "scored before" not in report.render_html(report.report_data(p, handle.result["run_id"],
                                                                              with_images=False))[0]
        assert synced["config"]["calibration"] == folder["calibration"]
        assert synced["config"]["map"].get("use") == _use(chosen["maps"])
        # the operator's threshold was on the old scale: the new calibration is in force
        assert session.current_threshold(p, synced) == chosen["threshold"]
        results = p.inspection_results(handle.result["run_id"])
        assert {r["meta"]["threshold"] for r in results} == {chosen["threshold"]}
        assert [r["verdict"] for r in results] == session.verdicts([r["score"] for r in results], chosen["threshold"])
        (row,) = [r for r in session.audit_rows(p) if r["action"] == "model.update"]
        assert row["details"]["maps"] == _use(chosen["maps"]) and row["details"]["new_threshold"] == chosen["threshold"]
        assert row["new"] == f"{chosen['threshold']:.4g}"
        session.set_threshold(p, synced, 0.5, user="qa")  # set after the recalibration: it counts
        assert session.current_threshold(p, synced) == 0.5

    # With --project the copy follows at once; the same calibration again changes nothing.
    assert main(["inspect", "calibrate", str(copy), str(subset), "--json", "--device", "cpu",
                 "--project", str(proj)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["model_id"] == model["id"] and again["threshold"] == chosen["threshold"]
    with Project.open(proj, read_only=True) as p:
        assert len(p.audit_log("model.update")) == 1
        assert session.current_threshold(p, p.get_model(model["id"])) == 0.5


def test_calibrating_on_a_project_data_set_chooses_as_the_command_line_does(trained, subset, tmp_path, capsys):
    from core.inspect import session
    from core.project import Project
    from desktop.launcher import main

    on_folder, in_project = tmp_path / "a", tmp_path / "b"
    shutil.copytree(trained[0], on_folder)
    shutil.copytree(trained[0], in_project)
    assert main(["inspect", "calibrate", str(on_folder), str(subset), "--choose-maps", "--json",
                 "--device", "cpu"]) == 0
    cli = json.loads(capsys.readouterr().out)
    with Project.create(tmp_path / "qa.lienzo") as p:
        dataset_id = session.import_folder(p, subset)["dataset_id"]
        model_id = p.register_model(session.MODEL_KIND, "m", str(in_project),
                                    config=store.read_config(in_project))
        runner = JobRunner(p)
        try:
            params = {"model_id": model_id, "dataset_id": dataset_id, "split": "test", "choose_maps": True}
            handle = runner.submit(session.calibrate_job, params, kind="inspect.calibrate")
            assert handle.wait(120) and handle.status == "done", handle.error
            # the training split holds no defects: a clear message, nothing written
            handle = runner.submit(session.calibrate_job, {**params, "split": "train"}, kind="inspect.calibrate")
            assert handle.wait(60) and handle.status == "failed"
            assert "14 good and 0 defective" in handle.error.message
        finally:
            runner.shutdown()
        assert sorted(r["status"] for r in p.list_runs("inspect.calibrate")) == ["done", "failed"]
        model = p.get_model(model_id)
        assert model["config"]["calibration"] == store.read_config(in_project)["calibration"]
        assert len(p.audit_log("model.update")) == 1
    # images and masks read from the project give the choice and threshold the folder gives
    folder_cfg = store.read_config(in_project)
    assert cli["subsets"][0]["pixel_auroc"] is not None  # the masks counted
    assert folder_cfg["map"].get("use") == _use(cli["maps"])
    assert folder_cfg["calibration"]["threshold"] == pytest.approx(cli["threshold"], rel=1e-5)


def test_colour_rotations_and_skipped_files_are_reported(subset, tmp_path):
    data = tmp_path / "good"
    data.mkdir()
    for p in sorted((subset / "train" / "good").iterdir())[:9]:
        # Colour copies of the grey tiles, mixed sizes kept.
        Image.open(p).convert("RGB").save(data / f"{p.stem}.png")
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "m"
    res = train.run({"data": str(data), "out": str(out), **FAST, "steps": 3, "channels": 3, "rot90": True}, Ctx())
    assert [Path(p).name for p, _ in res["skipped"]] == ["broken.png"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["preprocess"]["channels"] == 3 and cfg["preprocess"]["rot90"] is True
    assert cfg["arch"]["channels"] == 3 and cfg["training"]["skipped"] == 1
    rows, _, skipped = Inspector.load(out, "cpu").inspect_paths(sorted(data.iterdir()))
    assert len(rows) == 9 and len(skipped) == 1 and "not a readable image" in skipped[0][1]


def test_foreign_regions_replace_a_large_part_by_another_image():
    from core.inspect.synth import make_foreign_regions

    g = torch.Generator().manual_seed(3)
    x = torch.zeros(24, 1, 48, 64)
    pool = torch.full((2, 1, 48, 64), 2.0)
    out, target = make_foreign_regions(x, pool, g, p_region=1.0)
    covered = target.mean((1, 2, 3))
    assert covered.min() > 0.05 and covered.max() < 0.6  # an edge band or large blobs, never all
    changed = (out != 0).float()
    assert torch.equal(changed * target, target)  # marked only where the image changed
    assert (out[target.bool()] - 2.0).abs().max() < 2.0  # the donor, a little brighter or darker


@pytest.mark.parametrize("n", [1, 2, 7, 4096, 16385])
def test_blob_threshold_is_torch_quantile_without_the_sort(n):
    from core.inspect.synth import _quantile

    flat = torch.rand(n, generator=torch.Generator().manual_seed(n))
    for q in (0.0, 0.55, 0.9, 0.99, 1.0):
        assert float(_quantile(flat, q)) == pytest.approx(float(torch.quantile(flat, q)), abs=1e-6)


def test_foreign_regions_come_from_an_image_of_the_same_view():
    from core.inspect.synth import make_foreign_regions

    g = torch.Generator().manual_seed(5)
    x = torch.zeros(24, 1, 48, 48)
    views = torch.arange(24) % 3
    pool_views = torch.tensor([0, 1, 2, 0, 1, 2])
    pool = (10.0 ** (pool_views.float() + 1)).view(6, 1, 1, 1).expand(6, 1, 48, 48).clone()  # 10, 100, 1000
    out, target = make_foreign_regions(x, pool, g, p_region=1.0, pool_views=pool_views, views=views)
    for i in range(24):
        inside = out[i][target[i].bool()]
        assert inside.numel() > 0
        # a gain of exp(0.15 N(0,1)) and an offset of 0.2 N(0,1) keep a view's level far from the others'
        ratio = inside / 10.0 ** (int(views[i]) + 1)
        assert ratio.min() > 0.3 and ratio.max() < 3.0, (i, int(views[i]), float(inside.mean()))

def test_context_segmenter_sees_the_whole_row_and_column():
    from core.inspect import model as M

    # Batch statistics: an untrained network's running ones shrink the deep features to nearly zero.
    net = M.ContextSegmenter({}).train()
    x = torch.randn(1, 1, 64, 320)
    with torch.inference_mode():
        a = net(x)
        y = x.clone()
        y[0, 0, :16, 304:] += 5.0  # 290 pixels away: beyond the convolutions' reach (about 60 pixels)
        b = net(y)
    assert a.shape == (1, 1, 64, 320)
    assert (a[0, 0, 0:4, 0:8] - b[0, 0, 0:4, 0:8]).abs().max() > 1e-5
