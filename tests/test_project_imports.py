"""Bringing files into a project: images of every kind, bad files, bombs, text encodings."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from core.imports import MAX_PIXELS, ImportRejected, decode_text, probe_image
from core.project import Project, ProjectError


@pytest.fixture
def project(tmp_path):
    with Project.create(tmp_path / "imports.lienzo") as p:
        yield p


def _encode(im: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **options)
    return out.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def _png_raw(width: int, height: int, depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG written by hand: Pillow cannot write 16-bit RGB, and a bomb needs a lying header."""
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(idat)) + _chunk(b"IEND", b""))


def _gradient(h=48, w=64) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)


def _samples() -> dict[str, tuple[bytes, dict]]:
    rgb = Image.fromarray(np.stack([_gradient()] * 3, axis=-1))
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(_gradient()[::-1]))  # real transparency, kept by every format
    grey = Image.fromarray(_gradient())
    grey16 = Image.fromarray((_gradient().astype(np.uint16) * 16))  # a 12-bit camera's range
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    rgb16_rows = b"".join(b"\x00" + np.full((20, 3), 40000, ">u2").tobytes() for _ in range(10))
    return {
        "rgb.png": (_encode(rgb, "PNG"), {"format": "PNG", "mode": "RGB", "bit_depth": 8}),
        "rgba.png": (_encode(rgba, "PNG"), {"format": "PNG", "mode": "RGBA", "bit_depth": 8}),
        "grey.png": (_encode(grey, "PNG"), {"format": "PNG", "mode": "L", "bit_depth": 8}),
        "grey16.png": (_encode(grey16, "PNG"), {"format": "PNG", "bit_depth": 16}),
        "rgb16.png": (_png_raw(20, 10, 16, 2, rgb16_rows), {"format": "PNG", "bit_depth": 16}),
        "palette.png": (_encode(palette, "PNG"), {"format": "PNG", "mode": "P"}),
        "rgb.jpg": (_encode(rgb, "JPEG", quality=90), {"format": "JPEG", "mode": "RGB"}),
        "grey.jpg": (_encode(grey, "JPEG"), {"format": "JPEG", "mode": "L"}),
        "rgb.bmp": (_encode(rgb, "BMP"), {"format": "BMP", "mode": "RGB"}),
        "palette.bmp": (_encode(palette, "BMP"), {"format": "BMP", "mode": "P"}),
        "rgb.tif": (_encode(rgb, "TIFF"), {"format": "TIFF", "mode": "RGB", "bit_depth": 8}),
        "grey16.tif": (_encode(grey16, "TIFF"), {"format": "TIFF", "bit_depth": 16}),
        "rgba.tif": (_encode(rgba, "TIFF", compression="tiff_lzw"), {"format": "TIFF",
                                                                     "mode": "RGBA"}),
        "rgb.webp": (_encode(rgb, "WEBP", lossless=True), {"format": "WEBP", "mode": "RGB"}),
        "rgba.webp": (_encode(rgba, "WEBP"), {"format": "WEBP", "mode": "RGBA"}),
    }


def test_every_supported_kind_imports_with_a_thumbnail(project, tmp_path):
    samples = _samples()
    paths = []
    for name, (data, _) in samples.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    report = project.import_images(paths)
    assert report.skipped == []
    assert len(report.imported) == len(samples) == project.counts()["images"]
    by_name = {project.get_image(i)["name"]: project.get_image(i) for i in report.imported}
    for name, (data, expected) in samples.items():
        info = by_name[name]
        assert {k: info[k] for k in expected} == expected, name
        assert project.image_bytes(info["id"]) == data  # the file's own bytes, untouched
        thumb = Image.open(io.BytesIO(project.thumbnail_bytes(info["id"])))
        assert thumb.format == "PNG" and max(thumb.size) <= 256
        assert thumb.mode in ("L", "LA", "RGB", "RGBA"), name  # 8-bit, displayable
    assert project.audit_log(action="images.import")[0]["details"]["imported"] == len(samples)


def test_16_bit_thumbnail_uses_the_image_range():
    # values 0..4080 of 65535: divided by 257 this would be near-black; stretched it is not
    grey16 = Image.fromarray((_gradient().astype(np.uint16) * 16))
    info = probe_image(_encode(grey16, "PNG"))
    thumb = np.asarray(Image.open(io.BytesIO(info.thumbnail)))
    assert thumb.max() >= 250 and thumb.min() <= 5


def test_large_images_get_small_thumbnails():
    big = Image.new("RGB", (3000, 1000), (10, 20, 30))
    info = probe_image(_encode(big, "JPEG"))
    assert Image.open(io.BytesIO(info.thumbnail)).size == (256, 85)


def test_bad_files_are_skipped_with_reasons(project, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(_encode(Image.new("RGB", (8, 8), "red"), "PNG"))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image at all")
    jpeg = _encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3),
                                                                     dtype=np.uint8)), "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    garbage_png = tmp_path / "broken.png"
    damaged = bytearray(_encode(Image.fromarray(np.random.default_rng(2).integers(
        0, 255, (64, 64, 3), dtype=np.uint8)), "PNG"))
    damaged[200:400] = b"\xff" * 200  # garbage in the compressed pixel data
    garbage_png.write_bytes(bytes(damaged))
    gif = tmp_path / "anim.gif"
    gif.write_bytes(_encode(Image.new("P", (4, 4)), "GIF"))
    bomb = tmp_path / "bomb.png"  # claims 100000 x 100000 pixels in a few hundred bytes
    bomb.write_bytes(_png_raw(100_000, 100_000, 8, 2, b"\x00" * 300))
    missing = tmp_path / "gone.png"

    report = project.import_images([good, empty, text, truncated, garbage_png, gif, bomb,
                                    missing])
    assert len(report.imported) == 1
    reasons = dict(report.skipped)
    assert set(reasons) == {str(p) for p in (empty, text, truncated, garbage_png, gif, bomb,
                                             missing)}
    assert "empty" in reasons[str(empty)]
    assert "not an image" in reasons[str(text)]
    assert "corrupt" in reasons[str(truncated)]
    assert "corrupt" in reasons[str(garbage_png)]
    assert "unsupported image format GIF" in reasons[str(gif)]
    assert "too large" in reasons[str(bomb)] and "10,000,000,000" in reasons[str(bomb)]
    assert "cannot read" in reasons[str(missing)]
    assert project.integrity_check() == ["ok"]


def test_pixel_cap_is_checked_before_decoding():
    # just over the cap: Pillow's own bomb guard and ours agree on the limit
    side = int(MAX_PIXELS ** 0.5) + 1
    with pytest.raises(ImportRejected, match="too large"):
        probe_image(_png_raw(side, side, 8, 0, b"\x00" * 100))


def test_folders_are_searched(project, tmp_path):
    folder = tmp_path / "shots" / "day1"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"{i}.png").write_bytes(_encode(Image.new("L", (5, 5), i * 40), "PNG"))
    (folder / ".hidden.png").write_bytes(b"")
    steps = []
    report = project.import_images([tmp_path / "shots"],
                                   progress=lambda s, t, m: steps.append((s, t)))
    assert len(report.imported) == 3 and report.skipped == []
    assert steps[0] == (0, 3) and steps[-1] == (3, 3)


def test_import_can_be_stopped_by_progress(project, tmp_path):
    files = []
    for i in range(4):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(_encode(Image.new("L", (5, 5), i * 50), "PNG"))

    class Stop(Exception):
        pass

    def progress(step, total, message):
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        project.import_images(files, progress=progress)
    assert project.counts()["images"] == 2  # what was imported before the stop is kept


# -- text --------------------------------------------------------------------------------------

TEXT = "Le café est très bon, la crème brûlée aussi. Ça coûte 5 € à Noël.\nSecond line."


@pytest.mark.parametrize("encoding, expected", [
    ("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("utf-16", "utf-16"),
    ("cp1252", "cp1252"),
])
def test_text_encodings_are_detected(project, tmp_path, encoding, expected):
    path = tmp_path / f"note-{encoding}.md"
    path.write_bytes(TEXT.replace("\n", "\r\n").encode(encoding))
    doc = project.import_text_file(path)
    info = project.get_document(doc)
    assert info["text"] == TEXT and info["title"] == f"note-{encoding}"
    assert info["format"] == "markdown"
    assert project.audit_log(action="document.import")[0]["details"]["encoding"] == expected


def test_latin1_and_other_single_byte_encodings():
    latin1 = "Él comió jalapeños en la montaña. ¿Qué pasó? ¡Olé!".encode("latin-1")
    assert decode_text(latin1)[0] == "Él comió jalapeños en la montaña. ¿Qué pasó? ¡Olé!"
    polish = "Zażółć gęślą jaźń. Pchnąć w tę łódź jeża lub ośm skrzyń fig.".encode("cp1250")
    assert decode_text(polish)[0].startswith("Zażółć gęślą jaźń")
    russian = "Съешь же ещё этих мягких французских булок, да выпей чаю.".encode("cp1251")
    assert decode_text(russian)[0].startswith("Съешь же ещё")


def test_binary_files_are_refused_clearly(project, tmp_path):
    binary = tmp_path / "photo.txt"
    binary.write_bytes(_encode(Image.new("RGB", (50, 50), "blue"), "PNG")
                       + np.random.default_rng(0).bytes(4000))
    with pytest.raises(ProjectError, match="not a text file") as info:
        project.import_text_file(binary)
    assert info.value.hint
    with pytest.raises(ProjectError, match="cannot be read"):
        project.import_text_file(tmp_path / "missing.txt")
    assert project.list_documents() == []
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    doc = project.import_text_file(empty)
    assert project.get_document(doc)["text"] == "" and project.get_document(doc)["format"] == \
        "plain"


# -- real files ----------------------------------------------------------------------------------

@pytest.mark.data
def test_real_images_and_book(project, shared_data):
    files = sorted((shared_data / "qa" / "magnetic_tile" / "test" / "crack").glob("*.jpg"))[:3]
    files += sorted((shared_data / "qa" / "deeppcb" / "test" / "defect").glob("*.png"))[:2]
    files += [shared_data / "images" / "skimage_bundled" / n for n in ("astronaut.png",
                                                                       "coins.png")]
    report = project.import_images(files)
    assert report.skipped == [] and len(report.imported) == len(files)
    modes = {project.get_image(i)["mode"] for i in report.imported}
    assert {"L", "1", "RGB"} <= modes
    doc = project.import_text_file(shared_data / "text" / "don_quijote_es_body.txt")
    assert "Mancha" in project.get_document(doc)["text"]
