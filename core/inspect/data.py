"""Image data for the inspector: finding images in a data set folder, reading them safely, and the
preprocessing that is saved with a model (size, grey/colour, brightness/contrast normalisation).

Layouts understood:
- MVTec AD: DATA/train/good, DATA/test/<good|defect type>, DATA/ground_truth/<type>/<stem>_mask.png
- plain: images directly in DATA (all good), or DATA/good (or ok) plus DATA/<defect type> folders,
  with optional masks in DATA/ground_truth/<type>/<stem>_mask.png or DATA/masks/<stem>_mask.png.
Unreadable files are skipped and reported, never fatal; no usable good image is a clear error.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from core.errors import AppError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}
GOOD_NAMES = ("good", "ok", "normal", "pass")
# Refuse decompression bombs early; anything larger than this many pixels is skipped with a reason.
MAX_PIXELS = 120_000_000
# Bigger images are reduced while decoding (JPEG draft / PIL reduce) before any float copy is made.
MAX_SIDE = 4096

DEFAULT_PREPROCESS = {
    "size": 256,            # images are resized to size x size
    "channels": 1,          # 1 grey, 3 colour
    "normalise": "percentile",  # per image: 1st..99th percentile -> fixed range (lamp/exposure drift)
    "flips": True,          # augmentation: horizontal/vertical flips respect the product?
    "rot90": False,         # augmentation: 90 degree rotations
}


@dataclass
class Item:
    path: Path
    label: str = "good"           # "good" or a defect type
    mask: Path | None = None

    @property
    def is_good(self) -> bool:
        return self.label == "good"


@dataclass
class DataSet:
    root: Path
    layout: str
    train: list[Item] = field(default_factory=list)
    test: list[Item] = field(default_factory=list)

    @property
    def defect_types(self) -> list[str]:
        return sorted({i.label for i in self.test if not i.is_good})


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _mask_for(root: Path, label: str, path: Path) -> Path | None:
    for cand in (root / "ground_truth" / label / f"{path.stem}_mask.png",
                 root / "ground_truth" / label / f"{path.stem}.png",
                 root / "masks" / f"{path.stem}_mask.png"):
        if cand.is_file():
            return cand
    return None


def scan(root: str | os.PathLike) -> DataSet:
    """Find the images of a data set folder (see module docstring for the layouts)."""
    root = Path(root)
    if not root.exists():
        raise AppError(f"The data folder '{root}' does not exist.", "Check the path.")
    if root.is_file():
        raise AppError(f"'{root}' is a file, not a data set folder.",
                       "Give a folder of good images (or an MVTec-style train/test folder).")
    if (root / "train").is_dir():
        ds = DataSet(root, "mvtec")
        for sub in sorted((root / "train").iterdir()):
            if sub.is_dir() and sub.name.lower() in GOOD_NAMES:
                ds.train += [Item(p) for p in _images_in(sub)]
        if (root / "test").is_dir():
            for sub in sorted((root / "test").iterdir()):
                if not sub.is_dir():
                    continue
                label = "good" if sub.name.lower() in GOOD_NAMES else sub.name
                for p in _images_in(sub):
                    ds.test.append(Item(p, label, None if label == "good" else _mask_for(root, label, p)))
        return ds
    ds = DataSet(root, "plain")
    direct = _images_in(root)
    ds.train += [Item(p) for p in direct]
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name in ("ground_truth", "masks"):
            continue
        if sub.name.lower() in GOOD_NAMES:
            ds.train += [Item(p) for p in _images_in(sub)]
        else:
            ds.test += [Item(p, sub.name, _mask_for(root, sub.name, p)) for p in _images_in(sub)]
    return ds


def require_good(items: list[Item], root: Path, minimum: int = 2) -> None:
    if not items:
        raise AppError(f"No good images were found in '{root}'.",
                       "Put images of good parts directly in the folder, in a 'good' sub-folder, "
                       "or in train/good (MVTec layout). Supported: " + ", ".join(sorted(IMAGE_SUFFIXES)))
    if len(items) < minimum:
        raise AppError(f"Only {len(items)} good image could be used in '{root}'; at least {minimum} are needed.",
                       "Add more images of good parts (dozens are better; hundreds are best).")


# -- reading ---------------------------------------------------------------------------------------

def read_image(path: str | os.PathLike, channels: int = 1) -> np.ndarray:
    """Read an image file into float32 (H, W, C) in [0, 1]. 16-bit, palette, 1-bit, alpha, EXIF
    orientation all handled; very large images are reduced while decoding. Raises AppError."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AppError(f"Cannot read '{path}': {exc.strerror}.", "Check that the file exists.") from None
    if size == 0:
        raise AppError(f"'{path.name}' is an empty file (0 bytes).", "Copy the image again.")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise Image.DecompressionBombError("too many pixels")
            if max(w, h) > MAX_SIDE and im.format == "JPEG":
                im.draft(im.mode, (w * MAX_SIDE // max(w, h), h * MAX_SIDE // max(w, h)))
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise AppError(f"'{path.name}' is too large to inspect safely (over {MAX_PIXELS // 1_000_000} megapixels).",
                       "Reduce the image first, or crop it to the part.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise AppError(f"'{path.name}' is not a readable image ({exc}).",
                       "The file may be damaged or not an image; it was skipped.") from None
    return pil_to_array(im, channels)


def pil_to_array(im: Image.Image, channels: int = 1) -> np.ndarray:
    if max(im.size) > MAX_SIDE:
        factor = int(np.ceil(max(im.size) / MAX_SIDE))
        im = im.reduce(factor) if im.mode not in ("1", "P") else im.convert("L").reduce(factor)
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if arr.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        arr = np.clip(arr / top, 0, 1)[..., None]
        return arr if channels == 1 else np.repeat(arr, 3, axis=2)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        arr = ((arr - lo) / max(hi - lo, 1e-6))[..., None]
        return arr if channels == 1 else np.repeat(arr, 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        # Transparent areas become black, like the background of most machine-vision shots.
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(bg, im)
    im = im.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(im, dtype=np.float32) / 255.0
    return arr[..., None] if channels == 1 else arr


def read_mask(path: Path | None, size: tuple[int, int]) -> np.ndarray:
    """A mask resized (nearest) to (H, W) as bool; all False when there is none."""
    if path is None:
        return np.zeros(size, dtype=bool)
    try:
        im = Image.open(path)
        im = im.convert("L").resize((size[1], size[0]), Image.NEAREST)
        return np.asarray(im) > 127
    except (OSError, ValueError, SyntaxError):
        return np.zeros(size, dtype=bool)


# -- preprocessing ---------------------------------------------------------------------------------

def preprocess(arr: np.ndarray, prep: dict) -> np.ndarray:
    """(H, W, C) float in [0, 1] -> (C, S, S) float32, resized and normalised as the model expects."""
    size = int(prep["size"])
    chans = []
    for c in range(arr.shape[2]):
        im = Image.fromarray(np.ascontiguousarray(arr[..., c]), mode="F")
        chans.append(np.asarray(im.resize((size, size), Image.BILINEAR, reducing_gap=None)))
    out = np.stack(chans, 0).astype(np.float32)
    return normalise(out, prep.get("normalise", "percentile"))


def normalise(x: np.ndarray, how: str) -> np.ndarray:
    """Map intensities to about [-2, 2]. 'percentile' divides out global brightness and contrast
    (an aged lamp, another exposure); 'fixed' keeps absolute intensities."""
    if how == "percentile":
        lo, hi = np.percentile(x, [1.0, 99.0])
        scale = max(float(hi - lo), 0.02)
        return (((x - lo) / scale - 0.5) * 4.0).astype(np.float32)
    if how in ("fixed", "none"):
        return ((x - 0.5) * 4.0).astype(np.float32)
    raise AppError(f"Unknown normalisation '{how}'.", "Use percentile or fixed.")


def load_batch(paths, prep: dict, workers: int = 2):
    """Read and preprocess images in threads (PIL decodes without the GIL). Returns (arrays, skipped)
    where arrays[i] is None for a skipped file and skipped lists (path, reason)."""
    chans = int(prep.get("channels", 1))

    def one(p):
        try:
            arr = read_image(p, chans)
            return preprocess(arr, prep), arr.shape[:2], None
        except AppError as exc:
            return None, None, exc.message

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(one, paths))
    arrays = [r[0] for r in results]
    shapes = [r[1] for r in results]
    skipped = [(str(p), r[2]) for p, r in zip(paths, results) if r[2] is not None]
    return arrays, shapes, skipped


def fingerprint(paths) -> str:
    """sha256 over names, sizes and modification-free content hashes of the first 64 KiB: cheap,
    and it changes when the training images change."""
    h = hashlib.sha256()
    for p in sorted(str(x) for x in paths):
        pp = Path(p)
        h.update(pp.name.encode())
        try:
            h.update(str(pp.stat().st_size).encode())
            with open(pp, "rb") as f:
                h.update(hashlib.sha256(f.read(65536)).digest())
        except OSError:
            h.update(b"?")
    return h.hexdigest()
