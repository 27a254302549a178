"""Sampler names users know (A1111's) mapped to diffusers schedulers."""

from __future__ import annotations

from core.errors import AppError

# name -> (diffusers class, extra config)
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "DDIM": ("DDIMScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                 "use_karras_sigmas": False}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                        "use_karras_sigmas": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "PNDM": ("PNDMScheduler", {"skip_prk_steps": True}),  # PLMS, as Stable Diffusion ships it
}
DEFAULT_SCHEDULER = "DPM++ 2M"

# ComfyUI sampler_name -> ours (for importing its PNGs)
COMFY_SAMPLERS = {"ddim": "DDIM", "euler": "Euler", "euler_ancestral": "Euler a", "dpmpp_2m": "DPM++ 2M",
                  "uni_pc": "UniPC", "uni_pc_bh2": "UniPC", "lms": "LMS", "heun": "Heun"}


def scheduler_names() -> list[str]:
    return list(SCHEDULERS)


def canonical_name(name: str) -> str:
    """Accepts our names case-insensitively and A1111 spellings ('DPM++ 2M' + Karras schedule)."""
    for known in SCHEDULERS:
        if known.lower() == str(name).strip().lower():
            return known
    raise AppError(f"Unknown scheduler '{name}'.", "Choose one of: " + ", ".join(SCHEDULERS) + ".")


def make_scheduler(name: str, base_config):
    """A new scheduler of the named kind, keeping the model's training settings (betas, prediction)."""
    import diffusers

    cls_name, extra = SCHEDULERS[canonical_name(name)]
    cls = getattr(diffusers, cls_name)
    config = dict(base_config)
    # Settings that belong to a different scheduler kind would leak in (e.g. Karras sigmas into Euler).
    for key in ("use_karras_sigmas", "algorithm_type", "solver_order"):
        config.pop(key, None)
    config.update(extra)
    return cls.from_config(config)
