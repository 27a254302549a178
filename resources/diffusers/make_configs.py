"""Writes the pipeline configs Lienzo ships for single-file (.safetensors) checkpoints.

Only configuration (no weights): the values are the published diffusers defaults of the model
families (Stable Diffusion 1.x, 2.x, XL and their inpainting variants). Run it again after editing:
    python resources/diffusers/make_configs.py
The CLIP tokenizer merges (clip_tokenizer/merges.txt) come from OpenAI's CLIP BPE file (MIT licence,
see clip_tokenizer/LICENSE); the vocabulary is derived from them at run time (core/image/tokenizer.py).
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCHEDULER_BASE = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None, "prediction_type": "epsilon", "timestep_spacing": "leading",
}

VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "scaling_factor": 0.18215,
}

CLIP_L = {
    "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
    "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 1, "projection_dim": 768, "vocab_size": 49408,
}

OPEN_CLIP_H = {**CLIP_L, "hidden_act": "gelu", "hidden_size": 1024, "intermediate_size": 4096,
               "num_attention_heads": 16, "num_hidden_layers": 23, "projection_dim": 512}

OPEN_CLIP_BIG_G = {**CLIP_L, "architectures": ["CLIPTextModelWithProjection"], "hidden_act": "gelu",
                   "hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20,
                   "num_hidden_layers": 32, "projection_dim": 1280}

UNET_SD1 = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "downsample_padding": 1,
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4,
    "sample_size": 64, "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}

UNET_SD2 = {**UNET_SD1, "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
            "use_linear_projection": True, "sample_size": 96, "upcast_attention": True}

UNET_SDXL = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64, "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280], "center_input_sample": False, "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "out_channels": 4, "projection_class_embeddings_input_dim": 2816, "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": False, "use_linear_projection": True,
}


def sd_index(cls):
    return {"_class_name": cls, "feature_extractor": [None, None], "safety_checker": [None, None],
            "requires_safety_checker": False, "image_encoder": [None, None],
            "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"]}


def xl_index(cls):
    return {"_class_name": cls, "force_zeros_for_empty_prompt": True, "feature_extractor": [None, None],
            "image_encoder": [None, None], "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}


FAMILIES = {
    # name: (model_index, unet, vae, text encoders, scheduler)
    "sd1": (sd_index("StableDiffusionPipeline"), UNET_SD1, VAE, {"text_encoder": CLIP_L},
            {"_class_name": "PNDMScheduler", **SCHEDULER_BASE}),
    "sd1-inpaint": (sd_index("StableDiffusionInpaintPipeline"), {**UNET_SD1, "in_channels": 9}, VAE,
                    {"text_encoder": CLIP_L}, {"_class_name": "PNDMScheduler", **SCHEDULER_BASE}),
    # SD 2.x at 768 px predicts v; the 512 px "base" checkpoints predict epsilon (see core/image/families.py).
    "sd2": (sd_index("StableDiffusionPipeline"), UNET_SD2, {**VAE, "sample_size": 768},
            {"text_encoder": OPEN_CLIP_H},
            {"_class_name": "DDIMScheduler", **SCHEDULER_BASE, "prediction_type": "v_prediction"}),
    "sd2-inpaint": (sd_index("StableDiffusionInpaintPipeline"),
                    {**UNET_SD2, "in_channels": 9, "sample_size": 64, "upcast_attention": False}, VAE,
                    {"text_encoder": OPEN_CLIP_H}, {"_class_name": "DDIMScheduler", **SCHEDULER_BASE}),
    "sdxl": (xl_index("StableDiffusionXLPipeline"), UNET_SDXL,
             {**VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
             {"text_encoder": CLIP_L, "text_encoder_2": OPEN_CLIP_BIG_G},
             {"_class_name": "EulerDiscreteScheduler", **SCHEDULER_BASE, "interpolation_type": "linear",
              "use_karras_sigmas": False}),
    "sdxl-inpaint": ({**xl_index("StableDiffusionXLInpaintPipeline"), "requires_aesthetics_score": False},
                     {**UNET_SDXL, "in_channels": 9},
                     {**VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
                     {"text_encoder": CLIP_L, "text_encoder_2": OPEN_CLIP_BIG_G},
                     {"_class_name": "EulerDiscreteScheduler", **SCHEDULER_BASE, "interpolation_type": "linear",
                      "use_karras_sigmas": False}),
}


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def main() -> None:
    for name, (index, unet, vae, encoders, scheduler) in FAMILIES.items():
        folder = HERE / name
        write(folder / "model_index.json", index)
        write(folder / "unet" / "config.json", unet)
        write(folder / "vae" / "config.json", vae)
        for sub, cfg in encoders.items():
            write(folder / sub / "config.json", cfg)
        write(folder / "scheduler" / "scheduler_config.json", scheduler)


if __name__ == "__main__":
    main()
