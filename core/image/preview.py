"""Cheap live previews: a linear projection of the 4 latent channels to RGB (no VAE decode).

The factors are the least-squares fits the community uses for step previews (A1111 / ComfyUI
'latent_rgb_factors'); they cost a 4x3 matrix product per step.
"""

from __future__ import annotations

SD_FACTORS = [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
              [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]]
SDXL_FACTORS = [[0.3920, 0.4054, 0.4549], [-0.2634, -0.0196, 0.0653],
                [0.0568, 0.1687, -0.0755], [-0.3112, -0.2359, -0.2076]]


def latents_to_preview(latents, xl: bool = False, size: tuple[int, int] | None = None):
    """First latent of a batch -> PIL RGB image (latent resolution, or `size` if given)."""
    import numpy as np
    import torch
    from PIL import Image

    factors = torch.tensor(SDXL_FACTORS if xl else SD_FACTORS, dtype=torch.float32)
    lat = latents[0].detach().float().cpu()
    if lat.shape[0] != 4:  # inpainting UNets' extra channels are not part of the latent image
        lat = lat[:4]
    rgb = torch.einsum("chw,cr->hwr", lat, factors)
    rgb = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return image
