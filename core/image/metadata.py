"""PNG metadata: write A1111's `parameters` text plus Lienzo's JSON; read A1111, ComfyUI and Lienzo PNGs.

A1111 text format (what many tools read):
    <prompt, may span lines>
    Negative prompt: <negative, may span lines>
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512, Model hash: 6ce0161689, Model: v1-5
ComfyUI stores its graph instead: a `prompt` chunk (API format: node id -> {class_type, inputs}) and a
`workflow` chunk (the editor's graph).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from core.errors import AppError

LIENZO_KEY = "lienzo"
A1111_KEY = "parameters"

# A1111's own pattern for one `Key: value` pair of the last line (values may be JSON-quoted).
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
RE_SIZE = re.compile(r"^(\d+)x(\d+)$")


def _quote(value) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _fmt_number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def a1111_text(params: dict) -> str:
    """The `parameters` text A1111 writes, from Lienzo's generation parameters."""
    lines = [params.get("prompt", "")]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    fields = [("Steps", params.get("steps")), ("Sampler", params.get("scheduler")),
              ("CFG scale", params.get("guidance")), ("Seed", params.get("seed")),
              ("Size", f"{params['width']}x{params['height']}" if params.get("width") else None)]
    model = params.get("model") or {}
    if model.get("hash"):
        fields.append(("Model hash", model["hash"][:10]))
    if model.get("name"):
        fields.append(("Model", model["name"]))
    if params.get("mode") in ("img2img", "inpaint", "outpaint") and params.get("strength") is not None:
        fields.append(("Denoising strength", params["strength"]))
    versions = params.get("versions") or {}
    fields.append(("Version", f"Lienzo {versions.get('lienzo', '')}".strip()))
    lines.append(", ".join(f"{k}: {_quote(_fmt_number(v))}" for k, v in fields if v is not None and v != ""))
    return "\n".join(lines)


def parse_a1111(text: str) -> dict:
    """A1111 `parameters` text -> {prompt, negative_prompt, steps, scheduler, guidance, seed, ...}."""
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    if len(RE_PARAM.findall(last)) < 3:  # no settings line: everything is prompt text
        last = ""
    else:
        lines = lines[:-1]
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    raw = {k.strip(): _unquote(v.strip()) for k, v in RE_PARAM.findall(last)}
    out: dict = {"source": "a1111", "prompt": "\n".join(prompt).strip(),
                 "negative_prompt": "\n".join(negative).strip(), "raw": raw}
    conv = {"Steps": ("steps", int), "CFG scale": ("guidance", float), "Seed": ("seed", int),
            "Denoising strength": ("strength", float), "Model hash": ("model_hash", str),
            "Model": ("model_name", str)}
    for key, (name, typ) in conv.items():
        if key in raw:
            try:
                out[name] = typ(raw[key])
            except ValueError:
                pass
    if "Sampler" in raw:
        sampler = raw["Sampler"]
        if raw.get("Schedule type", "").lower() == "karras" and "karras" not in sampler.lower():
            sampler += " Karras"
        out["scheduler"] = sampler
    size = RE_SIZE.match(raw.get("Size", ""))
    if size:
        out["width"], out["height"] = int(size.group(1)), int(size.group(2))
    return out


def _comfy_text(graph: dict, ref) -> str:
    """Follow a ComfyUI input link ([node_id, slot]) to the text of a CLIPTextEncode-like node."""
    seen = set()
    while isinstance(ref, list) and ref and str(ref[0]) in graph and str(ref[0]) not in seen:
        seen.add(str(ref[0]))
        node = graph[str(ref[0])]
        inputs = node.get("inputs", {})
        for key in ("text", "text_g", "prompt"):
            if isinstance(inputs.get(key), str):
                return inputs[key]
        ref = inputs.get("conditioning") or inputs.get("conditioning_1")
    return ""


def parse_comfyui(prompt_json: str | None, workflow_json: str | None = None) -> dict:
    """ComfyUI's `prompt` (API graph) -> our parameter names; the workflow is kept as is."""
    from core.image.schedulers import COMFY_SAMPLERS

    out: dict = {"source": "comfyui"}
    graph = {}
    if prompt_json:
        try:
            graph = json.loads(prompt_json)
        except json.JSONDecodeError as exc:
            raise AppError(f"The ComfyUI graph in this PNG is damaged ({exc}).", "Export it again from ComfyUI.")
    if workflow_json:
        try:
            out["workflow"] = json.loads(workflow_json)
        except json.JSONDecodeError:
            pass
    sampler = next((n for n in graph.values() if isinstance(n, dict)
                    and str(n.get("class_type", "")).startswith("KSampler")), None)
    if sampler:
        inp = sampler.get("inputs", {})
        seed = inp.get("seed", inp.get("noise_seed"))
        if isinstance(seed, int):
            out["seed"] = seed
        for key, name, typ in (("steps", "steps", int), ("cfg", "guidance", float), ("denoise", "strength", float)):
            if isinstance(inp.get(key), (int, float)):
                out[name] = typ(inp[key])
        name = inp.get("sampler_name")
        if isinstance(name, str):
            out["scheduler"] = COMFY_SAMPLERS.get(name, name)
            if inp.get("scheduler") == "karras" and out["scheduler"] == "DPM++ 2M":
                out["scheduler"] = "DPM++ 2M Karras"
        out["prompt"] = _comfy_text(graph, inp.get("positive"))
        out["negative_prompt"] = _comfy_text(graph, inp.get("negative"))
        latent = inp.get("latent_image")
        if isinstance(latent, list) and str(latent[0]) in graph:
            li = graph[str(latent[0])].get("inputs", {})
            if isinstance(li.get("width"), int) and isinstance(li.get("height"), int):
                out["width"], out["height"] = li["width"], li["height"]
    for node in graph.values():
        if isinstance(node, dict) and "ckpt_name" in node.get("inputs", {}):
            out["model_name"] = Path(str(node["inputs"]["ckpt_name"])).stem
    return out


def png_bytes(image, params: dict) -> bytes:
    """The image as PNG with an A1111 `parameters` chunk and Lienzo's full JSON."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(A1111_KEY, a1111_text(params))
    info.add_text(LIENZO_KEY, json.dumps(params, ensure_ascii=False, sort_keys=True))
    buf = io.BytesIO()
    # Level 1: a third of the default's encoding time (about 20 ms at 512², on the generation's
    # critical path) for files about 10 % larger.
    image.save(buf, format="PNG", pnginfo=info, compress_level=1)
    return buf.getvalue()


def export_png(image, params: dict, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise AppError(f"'{path.name}' is not a .png file name.", "Choose a file name ending in .png.")
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(png_bytes(image, params))
    tmp.replace(path)
    return path


def read_png_parameters(source) -> dict:
    """Parameters of a PNG (path or bytes): Lienzo's JSON first, then A1111's text, then ComfyUI's graph.

    Returns {} for a PNG without generation metadata.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as exc:
        raise AppError(f"Cannot read '{source}' ({exc.strerror}).", "Check the file name.") from None
    with fp:
        try:
            with Image.open(fp) as img:
                img.load()  # text chunks after the image data are read only once it is loaded
                text = dict(getattr(img, "text", {}) or {})
                size = img.size
        except (UnidentifiedImageError, OSError) as exc:
            raise AppError(f"This file is not a readable image ({exc}).", "Choose a PNG file.") from None
    if LIENZO_KEY in text:
        try:
            params = json.loads(text[LIENZO_KEY])
            params["source"] = "lienzo"
            return params
        except json.JSONDecodeError:
            pass  # fall back to the A1111 text that Lienzo writes too
    if A1111_KEY in text:
        out = parse_a1111(text[A1111_KEY])
    elif "prompt" in text or "workflow" in text:
        out = parse_comfyui(text.get("prompt"), text.get("workflow"))
    else:
        return {}
    out.setdefault("width", size[0])
    out.setdefault("height", size[1])
    return out


def import_png(project, path: str | Path) -> tuple[int, dict]:
    """Import a PNG into the project with the generation parameters it carries (A1111, ComfyUI, Lienzo)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AppError(f"Cannot read '{path}' ({exc.strerror}).", "Check the file name.") from None
    params = read_png_parameters(data)
    image_id = project.add_image(data, path.name, origin="imported", params=params or None,
                                 source_path=str(path))
    return image_id, params
