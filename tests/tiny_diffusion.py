"""A tiny random-weight Stable Diffusion pipeline, built offline in a temporary folder.

`build_tiny_pipeline(folder)` writes a real diffusers pipeline folder (model_index.json, safetensors
weights, configs, a CLIP tokenizer with a hand-written byte-level vocabulary). `write_single_file()`
turns it into an original-layout (LDM) single .safetensors checkpoint, the format A1111/Civitai
models come in, so tests can load it through `from_single_file` with the folder as config.
The key layout below follows the original Stable Diffusion code (ldm's UNetModel, Encoder/Decoder).
"""

from __future__ import annotations

import json
from pathlib import Path

SEED = 0
LAYERS = 1  # resnets per UNet down block (SD uses 2; the layout rules below handle any number)


def _byte_symbols() -> list[str]:
    from core.image.tokenizer import _bytes_to_unicode

    return _bytes_to_unicode()


def write_tokenizer(folder: Path) -> int:
    """A CLIP tokenizer (vocab.json + merges.txt with no merges). Returns the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False),
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return len(vocab)


def build_tiny_pipeline(folder: str | Path, inpainting: bool = False) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    tok_dir = folder.parent / (folder.name + "-tokenizer-src")
    vocab_size = write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=9 if inpainting else 4, out_channels=4, layers_per_block=LAYERS,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=32)
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 32, 32), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=32, sample_size=64)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1, projection_dim=32))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    if inpainting:
        from diffusers import StableDiffusionInpaintPipeline

        pipe = StableDiffusionInpaintPipeline(**pipe.components)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


# -- diffusers -> original (LDM) key layout ----------------------------------------------------------
def _unet_to_ldm(sd: dict, n_blocks: int, layers: int) -> dict:
    rename = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
              "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
    prefixes = {}
    for i in range(n_blocks):
        for j in range(layers):
            ldm = f"input_blocks.{1 + i * (layers + 1) + j}."
            prefixes[f"down_blocks.{i}.resnets.{j}."] = ldm + "0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = ldm + "1."
        prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * (layers + 1)}.0.op."
        for j in range(layers + 1):
            ldm = f"output_blocks.{i * (layers + 1) + j}."
            prefixes[f"up_blocks.{i}.resnets.{j}."] = ldm + "0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = ldm + "1."
    prefixes["mid_block.resnets.0."] = "middle_block.0."
    prefixes["mid_block.attentions.0."] = "middle_block.1."
    prefixes["mid_block.resnets.1."] = "middle_block.2."
    resnet_parts = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "norm2.": "out_layers.0.",
                    "conv2.": "out_layers.3.", "time_emb_proj.": "emb_layers.1.", "conv_shortcut.": "skip_connection."}
    out = {}
    for key, value in sd.items():
        new = key
        for a, b in rename.items():
            if key.startswith(a):
                new = b + key[len(a):]
        if key.startswith("up_blocks.") and ".upsamplers.0.conv." in key:
            i = int(key.split(".")[1])
            has_attn = any(k.startswith(f"up_blocks.{i}.attentions.") for k in sd)
            last = f"output_blocks.{i * (layers + 1) + layers}.{2 if has_attn else 1}.conv."
            new = last + key.split(".upsamplers.0.conv.")[1]
        else:
            for a, b in prefixes.items():
                if key.startswith(a):
                    rest = key[len(a):]
                    if ".resnets." in a:
                        for ra, rb in resnet_parts.items():
                            if rest.startswith(ra):
                                rest = rb + rest[len(ra):]
                    new = b + rest
                    break
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(sd: dict, n_blocks: int) -> dict:
    out = {}
    attn = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    for key, value in sd.items():
        new = key.replace("conv_shortcut.", "nin_shortcut.").replace("conv_norm_out.", "norm_out.")
        parts = new.split(".")
        if len(parts) < 4:
            pass  # conv_in, quant_conv, post_quant_conv ... keep their names
        elif parts[1] == "down_blocks":
            i = parts[2]
            if parts[3] == "resnets":
                new = ".".join([parts[0], "down", i, "block", parts[4]] + parts[5:])
            else:  # downsamplers.0.conv
                new = ".".join([parts[0], "down", i, "downsample"] + parts[5:])
        elif parts[1] == "up_blocks":
            i = str(n_blocks - 1 - int(parts[2]))
            if parts[3] == "resnets":
                new = ".".join([parts[0], "up", i, "block", parts[4]] + parts[5:])
            else:
                new = ".".join([parts[0], "up", i, "upsample"] + parts[5:])
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                new = ".".join([parts[0], "mid", f"block_{int(parts[3]) + 1}"] + parts[4:])
            else:
                rest = ".".join(parts[4:])
                for a, b in attn.items():
                    if rest.startswith(a):
                        rest = b + rest[len(a):]
                new = f"{parts[0]}.mid.attn_1.{rest}"
                if value.ndim == 2:  # the original uses 1x1 convolutions where diffusers uses linears
                    value = value.reshape(*value.shape, 1, 1)
        out["first_stage_model." + new] = value
    return out


def write_single_file(pipeline_folder: str | Path, out_path: str | Path) -> Path:
    """The tiny pipeline as one original-layout checkpoint (UNet, VAE, CLIP text encoder)."""
    from safetensors.torch import load_file, save_file

    folder = Path(pipeline_folder)
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())
    unet = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    vae = load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
    text = load_file(str(folder / "text_encoder" / "model.safetensors"))
    state = {}
    state.update(_unet_to_ldm(unet, len(unet_cfg["block_out_channels"]), unet_cfg["layers_per_block"]))
    state.update(_vae_to_ldm(vae, len(vae_cfg["block_out_channels"])))
    # Original checkpoints name the text encoder's tensors as transformers 4 did ("text_model.…").
    state.update({"cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
                  for k, v in text.items()})
    state = {k: v.contiguous() for k, v in state.items()}
    out_path = Path(out_path)
    save_file(state, str(out_path))
    return out_path


def shared_tiny_pipeline(tmp_path_factory) -> Path:
    """The tiny pipeline built once per test session (every image test module reuses the folder,
    so the model cache also keeps one loaded copy instead of one per module)."""
    folder = tmp_path_factory.getbasetemp() / "shared-tiny-sd" / "tiny-sd"
    if not (folder / "model_index.json").exists():
        build_tiny_pipeline(folder)
    return folder


def build_tiny_sdxl_pipeline(folder: str | Path) -> Path:
    """A tiny Stable Diffusion XL pipeline (two CLIP text encoders, text-time conditioning)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(folder)
    tok_dir = folder.parent / (folder.name + "-tokenizer-src")
    vocab_size = write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=32)
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 32, 32), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=32, sample_size=64)
    cfg = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=77, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
               pad_token_id=vocab_size - 1, projection_dim=32, hidden_act="gelu")
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**cfg)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**cfg)), tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         steps_offset=1, timestep_spacing="leading"))
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder
