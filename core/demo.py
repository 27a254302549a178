"""The demo project opened on first run: a welcome document and sample images made here by code.

No third-party assets: every picture is drawn with numpy and PIL from a fixed seed, so the demo is
the same on every machine and carries no licence question.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core import paths

WELCOME_TITLE = "Welcome to Lienzo"

# One paragraph per line: the editor wraps softly, so hard line breaks would look ragged.
WELCOME_TEXT = """\
# Welcome to Lienzo

Lienzo is an offline studio for text, images and visual inspection. Everything runs on this computer with local models: nothing is sent to the internet, and nothing needs it.

## What you can do here

- **Write.** Draft documents in this editor. Lienzo saves as you type (autosave within two seconds) and keeps every saved version: *History* lets you compare and restore them. Local language models can continue, rewrite, summarise, translate and search your texts.
- **Make images.** The image canvas shows the project's pictures with zoom, pan and the pixel value under the cursor. Local diffusion models generate new images from prompts, sketches and masks, and every result keeps the parameters and seed that made it.
- **Inspect parts.** For quality control, Lienzo trains a small variational autoencoder on images of good parts and scores new ones: anomaly score, heat map, PASS or FAIL against a calibrated threshold.

## How a project works

A project is a single `.lienzo` file. It holds your documents with their version history, images, data sets, models, a record of every job that ran, and an audit trail. Copy the file and you have copied the whole project.

## Try it

1. Edit this text: the word count below updates, and the status line tells you when it is saved.
2. Press **Ctrl+F** to find, **Ctrl+H** to replace, **Ctrl+Z** to undo.
3. Open *History* to see earlier versions of this document; *Preview* shows the Markdown.
4. Switch to the **Canvas** tab to look at the sample images: scroll to zoom, drag to pan, **F** fits the image, **1** shows it at 100 %.
5. Drop your own images or text files on the project browser on the left to import them.

The sample images in this project were drawn by Lienzo itself: a colour gradient, geometric shapes, and a procedural marble texture.
"""

NOTES_TITLE = "Notes"
NOTES_TEXT = "A plain text document. Lienzo keeps plain text and Markdown documents side by side.\n"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def gradient_image(width: int = 512, height: int = 320) -> Image.Image:
    """A smooth two-axis colour gradient (warm to cool) with a soft vignette."""
    x = np.linspace(0.0, 1.0, width)[None, :]
    y = np.linspace(0.0, 1.0, height)[:, None]
    red = 0.95 - 0.55 * x + 0.1 * y
    green = 0.35 + 0.35 * y + 0.1 * x
    blue = 0.3 + 0.6 * x * (1 - 0.3 * y)
    rgb = np.stack(np.broadcast_arrays(red, green, blue), axis=-1)
    vignette = 1 - 0.35 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
    rgb = np.clip(rgb * vignette[..., None], 0, 1)
    return Image.fromarray((rgb * 255).astype(np.uint8), "RGB")


def shapes_image(size: int = 384) -> Image.Image:
    """Geometric shapes on a transparent background (RGBA), like a sticker sheet."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((24, 24, size - 24, size - 24), radius=36, fill=(245, 241, 232, 255))
    draw.ellipse((60, 60, 200, 200), fill=(230, 87, 63, 255))
    draw.rectangle((200, 90, 330, 220), fill=(46, 134, 171, 230))
    draw.polygon([(90, 330), (190, 220), (290, 330)], fill=(242, 175, 41, 255))
    for i in range(6):
        offset = 40 + i * 18
        draw.line((offset + 200, 250, offset + 150, 345), fill=(40, 40, 48, 255), width=5)
    draw.ellipse((250, 250, 320, 320), outline=(40, 40, 48, 255), width=6)
    return image


def marble_texture(size: int = 320, seed: int = 7) -> Image.Image:
    """Procedural marble: a sine of x + y turbulence, turbulence summed from octaves of value noise."""
    rng = np.random.default_rng(seed)
    turbulence = np.zeros((size, size))
    for octave in range(5):
        cells = 4 * 2 ** octave
        grid = rng.random((cells + 1, cells + 1))
        coords = np.linspace(0, cells, size, endpoint=False)
        i = coords.astype(int)
        f = coords - i
        f = f * f * (3 - 2 * f)  # smoothstep, so cell borders do not show
        top = grid[i][:, i] * (1 - f)[None, :] + grid[i][:, i + 1] * f[None, :]
        bottom = grid[i + 1][:, i] * (1 - f)[None, :] + grid[i + 1][:, i + 1] * f[None, :]
        turbulence += (top * (1 - f)[:, None] + bottom * f[:, None]) / 2 ** octave
    x = np.linspace(0, 1, size)[None, :]
    y = np.linspace(0, 1, size)[:, None]
    veins = np.abs(np.sin((x * 3 + y * 2 + turbulence * 1.4) * np.pi))
    light = np.array([236, 232, 224]) / 255
    dark = np.array([70, 78, 92]) / 255
    t = veins[..., None] ** 0.6
    rgb = dark * (1 - t) + light * t
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")


def grey_ramp_16bit(width: int = 256, height: int = 96) -> Image.Image:
    """A 16-bit greyscale ramp: shows that Lienzo keeps high bit depth (QA cameras produce it)."""
    ramp = np.tile(np.linspace(0, 65535, width).astype(np.uint16), (height, 1))
    return Image.fromarray(ramp)  # uint16 gives mode I;16


SAMPLES = (
    ("Colour gradient", gradient_image, "gradient"),
    ("Shapes", shapes_image, "shapes"),
    ("Marble texture", marble_texture, "procedural texture"),
    ("Grey ramp (16-bit)", grey_ramp_16bit, "16-bit greyscale ramp"),
)


def create_demo_project(path: str | os.PathLike) -> Path:
    """Write a fresh demo project at `path` (built beside it and renamed, so never half-made)."""
    from core.project import Project

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    side_files = [Path(f"{partial}{suffix}") for suffix in ("-wal", "-shm", ".lock")]
    for leftover in (partial, *side_files):
        leftover.unlink(missing_ok=True)
    with Project.create(partial) as project:
        # Newest first in the browser: the welcome document is created last so it opens first.
        project.create_document(NOTES_TITLE, NOTES_TEXT, format="plain")
        project.create_document(WELCOME_TITLE, WELCOME_TEXT, format="markdown")
        for name, make, recipe in reversed(SAMPLES):  # newest first: the gradient leads
            project.add_image(_png(make()), name, origin="imported",
                              params={"demo": recipe, "made_by": "core.demo"})
    os.replace(partial, path)
    for leftover in side_files:  # the store's lock file stays behind after close
        leftover.unlink(missing_ok=True)
    return path


def ensure_demo_project() -> Path:
    """The demo project in the user data folder, created on first use."""
    path = paths.demo_project_path()
    if not path.exists():
        create_demo_project(path)
    return path
