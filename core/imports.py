"""Checking and decoding files a user brings into a project: images and text.

Pure functions on bytes, no database: the project store calls them, and so can a job that wants to
check files before importing. Every refusal is an `ImportRejected` (an AppError) whose message is
the reason shown to the user ("empty file (0 bytes)", "corrupt or truncated image: ...").
"""

from __future__ import annotations

import io
import re
import struct
import unicodedata
import warnings
from dataclasses import dataclass

from core.errors import AppError

# Pillow's own hard limit (twice Image.MAX_IMAGE_PIXELS by default): a 13k x 13k image. Anything
# larger is almost surely a decompression bomb, and would need gigabytes to decode.
MAX_PIXELS = 178_956_970
SUPPORTED_IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
THUMBNAIL_SIZE = 256
# A document is edited as one string in a text widget; beyond this it is data, not a document.
MAX_TEXT_BYTES = 50 * 1024 * 1024


class ImportRejected(AppError):
    """A file that cannot be imported; `message` is the reason, fit for a list of skipped files."""


@dataclass
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str
    bit_depth: int
    thumbnail: bytes  # PNG, longest side <= THUMBNAIL_SIZE, 8-bit


def probe_image(data: bytes) -> ImageInfo:
    """Validate and fully decode image bytes; return their description and a PNG thumbnail.

    The pixel count is checked from the header, before any pixel is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImportRejected("empty file (0 bytes)", "The file has no content; export it again.")
    with warnings.catch_warnings():
        # Pillow warns above half of our cap; we decide ourselves below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise _too_large(str(exc)) from exc
        except UnidentifiedImageError as exc:
            raise ImportRejected("not an image (or an image format Lienzo cannot read)",
                                 _formats_hint()) from exc
        except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
            raise ImportRejected(f"corrupt image header: {exc}", _corrupt_hint()) from exc
        with im:
            if im.format not in SUPPORTED_IMAGE_FORMATS:
                raise ImportRejected(f"unsupported image format {im.format}", _formats_hint())
            width, height = im.size
            if width <= 0 or height <= 0:
                raise ImportRejected("image has no pixels (width or height is 0)", _corrupt_hint())
            if width * height > MAX_PIXELS:
                raise _too_large(f"{width} x {height} = {width * height:,} pixels")
            try:
                im.load()  # decodes every pixel: truncated or damaged data fails here
            except Image.DecompressionBombError as exc:
                raise _too_large(str(exc)) from exc
            except (OSError, SyntaxError, ValueError, struct.error, EOFError,
                    IndexError, TypeError) as exc:
                raise ImportRejected(f"corrupt or truncated image: {exc}", _corrupt_hint()) from exc
            return ImageInfo(format=im.format, width=width, height=height, mode=im.mode,
                             bit_depth=_bit_depth(im, data), thumbnail=make_thumbnail(im))


def _too_large(detail: str) -> ImportRejected:
    found = re.search(r"\((\d+) pixels\)", detail)  # Pillow's own message, reworded
    if found:
        detail = f"{int(found.group(1)):,} pixels"
    return ImportRejected(f"image too large ({detail}); the limit is {MAX_PIXELS:,} pixels",
                          "Scale the image down or split it into tiles before importing.")


def _formats_hint() -> str:
    return "Lienzo imports " + ", ".join(SUPPORTED_IMAGE_FORMATS) + " images."


def _corrupt_hint() -> str:
    return "Open the file in an image viewer to check it, or export it again."


def _bit_depth(im, data: bytes) -> int:
    """Bits per sample as stored in the file (Pillow reduces 16-bit RGB PNGs to 8 bits on load)."""
    if im.format == "PNG" and data[12:16] == b"IHDR":
        return data[24]
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        if isinstance(bits, tuple) and bits:
            bits = bits[0]
        if isinstance(bits, int) and bits > 0:
            return bits
    if im.mode == "1":
        return 1
    if im.mode.startswith("I;16"):
        return 16
    if im.mode in ("I", "F"):
        return 32
    return 8


def make_thumbnail(im, size: int = THUMBNAIL_SIZE) -> bytes:
    """An 8-bit PNG no larger than `size` on either side, upright, fit for a browser grid."""
    from PIL import Image, ImageOps

    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not cost the user the image
        pass
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        im = _stretch_to_8bit(im, size)
    elif im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in im.getbands() or "a" in im.mode else "RGB")
    else:
        im = im.copy()  # thumbnail() works in place; leave the caller's image alone
    im.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()


def _stretch_to_8bit(im, size: int):
    """Map a 16/32-bit grey image to 8 bits over its own value range (0.5th to 99.5th percentile).

    A fixed /257 would show 12-bit camera images (values up to 4095) almost black.
    """
    import numpy as np
    from PIL import Image

    arr = np.asarray(im)
    step = max(1, max(arr.shape[:2]) // (size * 4))  # decimate first: percentiles of a sample
    small = arr[::step, ::step].astype(np.float32)
    finite = small[np.isfinite(small)]
    if finite.size == 0:
        return Image.new("L", (small.shape[1], small.shape[0]))
    lo, hi = np.percentile(finite, (0.5, 99.5))
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    scaled = np.clip((np.nan_to_num(small, nan=lo) - lo) * (255.0 / (hi - lo)), 0, 255)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


# -- text -------------------------------------------------------------------------------------

_BOMS = (  # UTF-32 first: its little-endian BOM begins with UTF-16's
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode a text file's bytes; return (text with \\n newlines, encoding name).

    A byte-order mark decides first, then strict UTF-8, then charset-normalizer's guess.
    Binary data raises ImportRejected.
    """
    if len(data) > MAX_TEXT_BYTES:
        raise ImportRejected(
            f"text file too large ({len(data) / 1e6:.0f} MB; a document holds up to "
            f"{MAX_TEXT_BYTES // (1024 * 1024)} MB)", "Split the file, or import it as a data set.")
    text = encoding = None
    for bom, name in _BOMS:
        if data.startswith(bom):
            try:
                text, encoding = data.decode(name), name
            except UnicodeDecodeError as exc:
                raise ImportRejected(f"the file starts like {name} text but is damaged: {exc}",
                                     "Re-save it as UTF-8 in a text editor.") from exc
            break
    if text is None and b"\x00" not in data:
        try:
            text, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
    if text is None:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise _binary()
        # On short texts charset-normalizer often ranks cp1250/cp775/mac_* above cp1252 for plain
        # Western text that all of them decode "without chaos". Windows-1252 (a superset of
        # Latin-1's printable range) is by far the likeliest, so it wins unless clearly worse.
        western = from_bytes(data, cp_isolation=["cp1252"]).best()
        if western is not None and western.chaos <= best.chaos + 0.1:
            best = western
        text, encoding = str(best), best.encoding
    if _looks_binary(text):
        raise _binary()
    return text.replace("\r\n", "\n").replace("\r", "\n"), encoding


def _looks_binary(text: str) -> bool:
    """Control characters (other than tab, newlines, form feed) are rare in real text."""
    if not text:
        return False
    sample = text[:200_000]
    controls = sum(1 for ch in sample
                   if ch not in "\t\n\r\f\v" and unicodedata.category(ch) == "Cc")
    return controls > max(2, len(sample) // 1000)


def _binary() -> ImportRejected:
    return ImportRejected("this is not a text file (it looks like binary data)",
                          "Import text files such as .txt or .md; images go through Import images.")
