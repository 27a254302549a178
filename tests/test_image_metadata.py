"""PNG metadata: A1111 `parameters` text, ComfyUI graphs and Lienzo's JSON, written and read back."""

import json

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from core.errors import AppError
from core.image.metadata import (a1111_text, export_png, import_png, parse_a1111, png_bytes,
                                 read_png_parameters)

A1111_SAMPLE = (
    "masterpiece, a lighthouse on a cliff, (storm:1.2),\n"
    "dramatic lighting\n"
    "Negative prompt: blurry, lowres,\n"
    "watermark\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, "
    "Size: 768x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, "
    'Lora hashes: "detail: 0123456789ab, style: ba9876543210", Version: v1.10.1'
)


def _png(tmp_path, name, chunks: dict, size=(32, 24)) -> str:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    path = tmp_path / name
    Image.new("RGB", size, (10, 120, 200)).save(path, pnginfo=info)
    return str(path)


def test_a1111_png_is_read(tmp_path):
    params = read_png_parameters(_png(tmp_path, "a1111.png", {"parameters": A1111_SAMPLE}))
    assert params["source"] == "a1111"
    assert params["prompt"] == "masterpiece, a lighthouse on a cliff, (storm:1.2),\ndramatic lighting"
    assert params["negative_prompt"] == "blurry, lowres,\nwatermark"
    assert params["steps"] == 28 and params["guidance"] == 6.5 and params["seed"] == 3141592653
    assert params["scheduler"] == "DPM++ 2M Karras"
    assert (params["width"], params["height"]) == (768, 512)
    assert params["model_hash"] == "6ce0161689" and params["model_name"] == "v1-5-pruned-emaonly"
    assert params["strength"] == 0.45
    assert params["raw"]["Lora hashes"] == "detail: 0123456789ab, style: ba9876543210"


def test_a1111_prompt_only_text_has_no_settings():
    parsed = parse_a1111("just a prompt, with commas")
    assert parsed["prompt"] == "just a prompt, with commas" and "steps" not in parsed


def test_comfyui_png_is_read(tmp_path):
    prompt = {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler_ancestral",
            "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
            "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15/dreamshaper_8.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 640, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cosy cabin in the snow", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    workflow = {"last_node_id": 9, "last_link_id": 9, "nodes": [
        {"id": 3, "type": "KSampler", "widgets_values": [156680208700286, "randomize", 20, 8,
                                                         "euler_ancestral", "normal", 1]}],
        "links": [], "groups": [], "config": {}, "extra": {}, "version": 0.4}
    path = _png(tmp_path, "ComfyUI_00001_.png", {"prompt": json.dumps(prompt), "workflow": json.dumps(workflow)})
    params = read_png_parameters(path)
    assert params["source"] == "comfyui"
    assert params["prompt"] == "a cosy cabin in the snow" and params["negative_prompt"] == "text, watermark"
    assert params["seed"] == 156680208700286 and params["steps"] == 20 and params["guidance"] == 8.0
    assert params["scheduler"] == "Euler a" and (params["width"], params["height"]) == (512, 640)
    assert params["model_name"] == "dreamshaper_8" and params["workflow"]["version"] == 0.4


def _lienzo_params():
    return {"mode": "txt2img", "prompt": "a fox, watercolour", "negative_prompt": "blurry", "steps": 12,
            "guidance": 7.5, "width": 64, "height": 48, "seed": 42, "scheduler": "Euler a",
            "model": {"name": "tiny, test", "hash": "ab" * 32, "family": "sd1"},
            "versions": {"lienzo": "0.1.0", "diffusers": "0.42.1", "torch": "2.13.0"}}


def test_lienzo_png_round_trip_and_a1111_compatibility(tmp_path):
    params = _lienzo_params()
    path = export_png(Image.new("RGB", (64, 48), "white"), params, tmp_path / "out.png")
    with Image.open(path) as img:
        img.load()
        chunks = dict(img.text)
    assert set(chunks) == {"parameters", "lienzo"}
    back = read_png_parameters(path)
    assert back.pop("source") == "lienzo" and back == params
    # What A1111 (and tools that read its format) see:
    a1111 = parse_a1111(chunks["parameters"])
    assert a1111["prompt"] == "a fox, watercolour" and a1111["negative_prompt"] == "blurry"
    assert a1111["seed"] == 42 and a1111["steps"] == 12 and a1111["scheduler"] == "Euler a"
    assert a1111["model_name"] == "tiny, test" and a1111["model_hash"] == "ab" * 5
    assert a1111["raw"]["Version"] == "Lienzo 0.1.0"


def test_png_bytes_text_written_before_reading_and_plain_png_gives_nothing(tmp_path):
    data = png_bytes(Image.new("RGB", (8, 8)), _lienzo_params())
    assert read_png_parameters(data)["seed"] == 42
    assert read_png_parameters(_png(tmp_path, "plain.png", {})) == {}
    assert a1111_text({"prompt": "p", "seed": 1, "steps": 2, "guidance": 3.0}).endswith("Version: Lienzo")


def test_bad_files(tmp_path):
    bad = tmp_path / "not.png"
    bad.write_bytes(b"hello")
    with pytest.raises(AppError, match="not a readable image"):
        read_png_parameters(bad)
    with pytest.raises(AppError, match=r"\.png"):
        export_png(Image.new("RGB", (4, 4)), {}, tmp_path / "x.jpg")


def test_import_png_into_project_keeps_parameters(tmp_path):
    from core.project import Project

    path = _png(tmp_path, "a1111.png", {"parameters": A1111_SAMPLE})
    with Project.create(tmp_path / "p.lienzo") as project:
        image_id, params = import_png(project, path)
        stored = project.get_image(image_id)
        assert stored["origin"] == "imported" and stored["params"]["seed"] == 3141592653
        assert params["source"] == "a1111"


def test_cli_params_command(tmp_path, capsys):
    from desktop.launcher import main

    path = _png(tmp_path, "a1111.png", {"parameters": A1111_SAMPLE})
    assert main(["image", "params", path]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 3141592653
    assert main(["image", "params", _png(tmp_path, "plain.png", {})]) == 2
    assert "no generation parameters" in capsys.readouterr().err
