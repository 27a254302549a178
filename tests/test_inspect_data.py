"""Image data for the inspector: layouts, safe reading of awkward files, bad-input messages."""

import core.inspect  # noqa: F401  (first: importing core sets how OpenMP threads wait, before torch loads)
import json

import numpy as np
import pytest
from PIL import Image

from core.errors import AppError
from core.inspect import data as D


def _png(path, arr, mode=None):
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def test_scan_mvtec_layout_finds_masks(shared_data):
    ds = D.scan(shared_data / "qa" / "magnetic_tile")
    assert ds.layout == "mvtec"
    assert len(ds.train) == 762
    assert set(ds.defect_types) == {"blowhole", "break", "crack", "fray", "uneven"}
    bad = [i for i in ds.test if not i.is_good]
    assert all(i.mask is not None and i.mask.is_file() for i in bad)


def test_scan_plain_layout(tmp_path):
    (tmp_path / "good").mkdir()
    (tmp_path / "scratch").mkdir()
    for i in range(3):
        _png(tmp_path / "good" / f"g{i}.png", np.full((20, 20), 100, np.uint8))
    _png(tmp_path / "scratch" / "s0.png", np.zeros((20, 20), np.uint8))
    (tmp_path / "masks").mkdir()
    _png(tmp_path / "masks" / "s0_mask.png", np.full((20, 20), 255, np.uint8))
    ds = D.scan(tmp_path)
    assert ds.layout == "plain" and len(ds.train) == 3
    assert [(i.label, i.mask.name) for i in ds.test] == [("scratch", "s0_mask.png")]


def test_empty_folder_and_missing_folder_are_clear(tmp_path):
    with pytest.raises(AppError, match="No good images"):
        D.require_good(D.scan(tmp_path).train, tmp_path)
    with pytest.raises(AppError, match="does not exist"):
        D.scan(tmp_path / "nope")


def test_only_one_image_is_clear(tmp_path):
    _png(tmp_path / "a.png", np.full((20, 20), 100, np.uint8))
    with pytest.raises(AppError, match="Only 1 good image"):
        D.require_good(D.scan(tmp_path).train, tmp_path)


def test_corrupt_and_zero_byte_files_are_skipped_with_reasons(tmp_path):
    _png(tmp_path / "ok.png", np.full((20, 20), 100, np.uint8))
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    paths = sorted(tmp_path.iterdir())
    arrays, _, skipped = D.load_batch(paths, {"size": 32, "channels": 1, "normalise": "percentile"})
    reasons = dict(skipped)
    assert "empty file" in reasons[str(tmp_path / "zero.png")]
    assert "not a readable image" in reasons[str(tmp_path / "corrupt.jpg")]
    assert sum(a is not None for a in arrays) == 1


def test_16bit_palette_1bit_and_alpha_pngs(tmp_path):
    ramp16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    Image.fromarray(ramp16).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    a = D.read_image(tmp_path / "deep.png")
    assert a.shape == (64, 64, 1) and 0 <= a.min() and a.max() <= 1 and a.max() > 0.9
    pal = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (64, 1))).convert("P")
    pal.save(tmp_path / "pal.png")
    assert D.read_image(tmp_path / "pal.png", 3).shape == (64, 64, 3)
    Image.fromarray(np.eye(32, dtype=bool)).save(tmp_path / "bits.png")
    assert D.read_image(tmp_path / "bits.png").max() == 1.0
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    assert D.read_image(tmp_path / "alpha.png", 3)[0, 0, 0] == pytest.approx(128 / 255, abs=0.01)


def test_huge_images_are_reduced_or_refused(tmp_path, monkeypatch):
    Image.new("L", (5000, 300), 90).save(tmp_path / "wide.png")
    a = D.read_image(tmp_path / "wide.png")
    assert max(a.shape[:2]) <= D.MAX_SIDE
    monkeypatch.setattr(D, "MAX_PIXELS", 1_000_000)
    with pytest.raises(AppError, match="too large"):
        D.read_image(tmp_path / "wide.png")


def test_percentile_normalisation_cancels_brightness_and_contrast(shared_data):
    path = sorted((shared_data / "qa" / "magnetic_tile" / "train" / "good").iterdir())[0]
    arr = D.read_image(path)
    prep = {"size": 64, "channels": 1, "normalise": "percentile"}
    base = D.preprocess(arr, prep)
    changed = D.preprocess(np.clip(arr * 1.3 + 0.05, 0, 1), prep)
    assert np.abs(base - changed).mean() < 0.02
    assert base.dtype == np.float32 and base.shape == (1, 64, 64)


def test_fingerprint_changes_with_content(tmp_path):
    p = _png(tmp_path / "a.png", np.full((8, 8), 1, np.uint8))
    f1 = D.fingerprint([p])
    _png(p, np.full((8, 8), 2, np.uint8))
    assert D.fingerprint([p]) != f1
    json.dumps(f1)
