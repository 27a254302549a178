"""Loading diffusion models: folders, single checkpoints with shipped configs, refusals, caching."""

import json
import struct

import pytest

from core.errors import AppError
from core.image.families import RESOURCES, inspect_model
from tests.tiny_diffusion import shared_tiny_pipeline, write_single_file


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = shared_tiny_pipeline(tmp_path_factory)
    single = write_single_file(folder, tmp_path_factory.mktemp("tiny-single") / "tiny-sd.safetensors")
    return folder, single


def _write_safetensors(path, names):
    """A valid .safetensors file holding 1-element float tensors with these names."""
    header, offset = {}, 0
    for name in names:
        header[name] = {"dtype": "F32", "shape": [1], "data_offsets": [offset, offset + 4]}
        offset += 4
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


def test_folder_and_single_file_give_the_same_pixels(tiny):
    from core.image.generate import run_generation

    folder, single = tiny
    src = inspect_model(single, config_dir=folder)
    assert (src.kind, src.family, src.inpainting) == ("file", "sd1", False)
    common = {"prompt": "a red kite", "steps": 2, "seed": 11, "width": 64, "height": 64}
    a = run_generation({"model": str(folder), **common}).results[0].image
    b = run_generation({"model": str(single), "config_dir": str(folder), **common}).results[0].image
    assert a.tobytes() == b.tobytes()


def test_single_file_uses_shipped_config_folder_by_family(tmp_path):
    sd1 = _write_safetensors(tmp_path / "sd1.safetensors", [
        "model.diffusion_model.input_blocks.0.0.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"])
    src = inspect_model(sd1)
    assert src.family == "sd1" and src.config_dir == RESOURCES / "sd1"
    xl = _write_safetensors(tmp_path / "xl.safetensors", [
        "model.diffusion_model.input_blocks.0.0.weight", "conditioner.embedders.0.transformer.x",
        "conditioner.embedders.1.model.ln_final.weight"])
    assert inspect_model(xl).config_dir == RESOURCES / "sdxl"
    v2 = _write_safetensors(tmp_path / "v2.safetensors", [
        "model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.model.ln_final.weight"])
    assert inspect_model(v2).family == "sd2"


def test_shipped_configs_describe_the_real_architectures():
    """Built on the meta device (no memory): parameter counts of the published models."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    def count(module):
        return sum(p.numel() for p in module.parameters())

    expected = {"sd1": (859520964, 123060480), "sd1-inpaint": (859535364, 123060480),
                "sd2": (865910724, 340387840)}
    for family, (unet_n, text_n) in expected.items():
        folder = RESOURCES / family
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(json.loads((folder / "unet" / "config.json").read_text()))
            text = CLIPTextModel(CLIPTextConfig(**json.loads((folder / "text_encoder" / "config.json").read_text())))
        assert (count(unet), count(text)) == (unet_n, text_n), family
    for family in ("sdxl", "sdxl-inpaint", "sd2-inpaint"):
        index = json.loads((RESOURCES / family / "model_index.json").read_text())
        assert index["_class_name"].startswith("StableDiffusion")


def test_clip_tokenizer_from_shipped_merges():
    from core.image.tokenizer import clip_tokenizer

    ids = clip_tokenizer()("a photograph of an astronaut riding a horse").input_ids
    assert ids == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]


def test_model_stays_loaded_between_generations(tiny):
    from core.image.generate import run_generation
    from core.image.pipelines import load_pipeline

    folder, _ = tiny
    first, _ = load_pipeline(folder)
    second = run_generation({"model": str(folder), "prompt": "one", "steps": 1, "width": 64, "height": 64,
                             "scheduler": "Euler a", "memory_mode": "attention_slicing"})
    third = run_generation({"model": str(folder), "prompt": "two", "steps": 1, "width": 64, "height": 64,
                            "scheduler": "UniPC", "memory_mode": "vae_tiling"})
    assert second.reused_model and third.reused_model
    assert load_pipeline(folder)[0] is first


def test_not_a_pipeline_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AppError, match="not a diffusion pipeline"):
        inspect_model(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AppError, match="no model_index.json"):
        inspect_model(empty)
    with pytest.raises(AppError, match="does not exist"):
        inspect_model(tmp_path / "missing")


def test_pickle_checkpoints_are_refused_with_a_conversion_hint(tmp_path, tiny):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(AppError) as err:
        inspect_model(ckpt)
    assert "pickle" in err.value.message and "safetensors" in err.value.hint
    # a pipeline folder whose weights are pickles only
    folder = tmp_path / "pickled"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(AppError, match="pickle") as err:
        inspect_model(folder)
    assert "safe" in err.value.hint


def test_unknown_families_get_clear_messages(tmp_path):
    odd = _write_safetensors(tmp_path / "odd.safetensors", ["encoder.weight", "decoder.weight"])
    with pytest.raises(AppError, match="not a model family Lienzo knows") as err:
        inspect_model(odd)
    assert "Stable Diffusion 1.x, 2.x and XL" in err.value.hint
    sd3 = _write_safetensors(tmp_path / "sd3.safetensors",
                             ["model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight"])
    with pytest.raises(AppError, match="Stable Diffusion 3"):
        inspect_model(sd3)
    folder = tmp_path / "kandinsky"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    with pytest.raises(AppError, match="KandinskyV22Pipeline"):
        inspect_model(folder)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x01")
    with pytest.raises(AppError, match="not a readable .safetensors"):
        inspect_model(broken)


def test_out_of_memory_message_names_the_memory_mode_to_try():
    import torch

    from core.image.memory import is_out_of_memory, out_of_memory_error

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(ValueError("x"))
    err = out_of_memory_error("none", 1024, 1024, "cuda")
    assert "Attention slicing" in err.hint and "1024×1024" in err.message
    assert "VAE tiling" in out_of_memory_error("attention_slicing", 512, 512, "cuda").hint
    assert "offload" in out_of_memory_error("vae_tiling", 512, 512, "cuda").hint
    assert "smaller" in out_of_memory_error("cpu_offload", 512, 512, "cuda").hint


def test_memory_mode_is_remembered():
    from core.image.settings import load_settings, save_settings

    assert load_settings()["memory_mode"] == "none"
    save_settings(memory_mode="vae_tiling", scheduler="Euler a")
    assert load_settings()["memory_mode"] == "vae_tiling" and load_settings()["scheduler"] == "Euler a"


def test_single_file_with_shipped_sd1_config_loads_offline_up_to_the_weights(tiny):
    """No config_dir: the shipped SD 1.x configs and CLIP tokenizer are used, without the network;
    the tiny weights then do not fit the real SD 1.5 shapes, which is reported clearly."""
    from core.image.pipelines import load_pipeline

    _, single = tiny
    with pytest.raises(AppError, match="do not fit the Stable Diffusion 1.x architecture") as err:
        load_pipeline(single)
    assert "diffusers folder" in err.value.hint
