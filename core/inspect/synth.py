"""Synthetic defects (DRAEM-style) made on the fly from good patches: the network learns to redraw
the good surface under them and its head learns to point at what changed. No outside images: the
fills come from the batch itself (another part of another good image) or from intensity changes,
so this works for textures (tiles, fabric) and for binary layouts (printed circuit boards) alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.inspect.model import blur


def _blob_mask(n, size, g, width=None, grid=(2, 9), cover=(0.01, 0.12)):
    """Perlin-like blobs: low-resolution noise (a grid of `grid` cells, drawn in that range),
    smoothly upsampled to size x width, thresholded so a fraction `cover` (drawn) is inside."""
    width = width or size
    masks = torch.zeros(n, 1, size, width)
    for i in range(n):
        res = int(torch.randint(*grid, (1,), generator=g))
        noise = torch.rand(1, 1, res + 1, res + 1, generator=g)
        up = F.interpolate(noise, size=(size, width), mode="bicubic", align_corners=True)
        frac = float(torch.empty(1).uniform_(*cover, generator=g))
        thr = _quantile(up.flatten(), 1 - frac)
        masks[i] = (up > thr).float()[0]
    return masks


def _quantile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """torch.quantile's linear interpolation from two selections instead of a sort: 20 times
    faster at 128 x 128 (a third of the time spent making training batches went to sorting)."""
    pos = q * (flat.numel() - 1)
    below = int(pos)
    lo = flat.kthvalue(below + 1).values
    if below + 1 >= flat.numel():
        return lo
    return torch.lerp(lo, flat.kthvalue(below + 2).values, torch.tensor(pos - below, dtype=flat.dtype))


def _spot_mask(n, size, g):
    """Small round or elongated spots (holes, pits, specks)."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cy, cx = (torch.rand(2, generator=g) * size).tolist()
            ry, rx = (1.0 + torch.rand(2, generator=g) * size * 0.08).tolist()
            a = float(torch.rand(1, generator=g)) * math.pi
            dy, dx = yy - cy, xx - cx
            u = dx * math.cos(a) + dy * math.sin(a)
            v = -dx * math.sin(a) + dy * math.cos(a)
            masks[i, 0] = torch.maximum(masks[i, 0], ((u / rx) ** 2 + (v / ry) ** 2 <= 1).float())
    return masks


def _line_mask(n, size, g):
    """Thin wandering lines (cracks, scratches, cut or bridged tracks)."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    pix = torch.stack([yy.flatten(), xx.flatten()], 1)
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        segs = int(torch.randint(1, 6, (1,), generator=g))
        p = torch.rand(2, generator=g) * size
        ang = float(torch.rand(1, generator=g)) * 2 * math.pi
        width = 0.6 + float(torch.rand(1, generator=g)) * 2.0
        step = size * (0.1 + 0.25 * float(torch.rand(1, generator=g)))
        dist = torch.full((size * size,), 1e9)
        for _ in range(segs):
            ang += float(torch.randn(1, generator=g)) * 0.6
            q = p + step * torch.tensor([math.sin(ang), math.cos(ang)])
            d = q - p
            t = ((pix - p) @ d / (d @ d + 1e-6)).clamp(0, 1)
            proj = p + t[:, None] * d
            dist = torch.minimum(dist, (pix - proj).norm(dim=1))
            p = q
        masks[i, 0] = (dist <= width).float().view(size, size)
    return masks


def make_defects(x: torch.Tensor, g: torch.Generator, p_defect: float = 0.5):
    """x: clean (N, C, S, S) patches (normalised). Returns (corrupted, target mask (N, 1, S, S))."""
    n, c, s, _ = x.shape
    out = x.clone()
    target = torch.zeros(n, 1, s, s)
    chosen = (torch.rand(n, generator=g) < p_defect).nonzero().flatten().tolist()
    if not chosen:
        return out, target
    kinds = torch.randint(0, 3, (len(chosen),), generator=g).tolist()
    masks = torch.zeros(len(chosen), 1, s, s)
    for shape_kind, make in enumerate((_blob_mask, _spot_mask, _line_mask)):
        idx = [j for j, k in enumerate(kinds) if k == shape_kind]
        if idx:
            masks[idx] = make(len(idx), s, g)
    for j, i in enumerate(chosen):
        m = masks[j]
        if m.sum() < 1:
            continue
        clean = x[i]
        lo, hi = float(clean.min()), float(clean.max())
        fill = int(torch.randint(0, 4, (1,), generator=g))
        if fill == 0:      # darker or brighter region (pits, stains, copper added or missing)
            sign = -1.0 if float(torch.rand(1, generator=g)) < 0.5 else 1.0
            delta = sign * (0.6 + 2.4 * float(torch.rand(1, generator=g)))
            new = clean + delta
        elif fill == 1:    # another place of another image (wrong structure)
            k = int(torch.randint(0, n, (1,), generator=g))
            new = torch.roll(x[k], shifts=(int(torch.randint(0, s, (1,), generator=g)),
                                           int(torch.randint(0, s, (1,), generator=g))), dims=(1, 2))
            if float(torch.rand(1, generator=g)) < 0.5:
                new = new.transpose(1, 2)
        elif fill == 2:    # flat patch (texture lost: worn, broken, smeared)
            level = lo + (hi - lo) * float(torch.rand(1, generator=g))
            new = torch.full_like(clean, level)
        else:              # contrast inverted locally
            new = (lo + hi) - clean
        if float(torch.rand(1, generator=g)) < 0.7:
            new = new.clamp(lo, hi)
        else:
            new = new.clamp(-3.0, 3.0)
        opacity = 0.5 + 0.5 * float(torch.rand(1, generator=g))
        mixed = clean * (1 - opacity * m) + new * opacity * m
        changed = ((mixed - clean).abs().amax(0, keepdim=True) > 0.15).float() * m
        out[i] = mixed
        target[i] = changed
    return out, target


def _edge_band_mask(n, height, width, g):
    """A band from one edge (any of the four) over 15-50 % of the image, with a gently wavy border."""
    masks = torch.zeros(n, 1, height, width)
    for i in range(n):
        vertical_border = float(torch.rand(1, generator=g)) < 0.5  # the band runs from the left or right
        along, across = (height, width) if vertical_border else (width, height)
        t = torch.arange(along, dtype=torch.float32) / along
        depth = 0.15 + 0.35 * float(torch.rand(1, generator=g))
        amplitude = 0.05 * float(torch.rand(1, generator=g))
        cycles = 1.0 + 3.0 * float(torch.rand(1, generator=g))
        phase = 2 * math.pi * float(torch.rand(1, generator=g))
        border = (depth + amplitude * torch.sin(2 * math.pi * cycles * t + phase)) * across
        inside = (torch.arange(across, dtype=torch.float32)[:, None] < border[None, :]).float()
        if float(torch.rand(1, generator=g)) < 0.5:
            inside = inside.flip(0)  # from the opposite edge
        masks[i, 0] = inside.t() if vertical_border else inside
    return masks


def _large_blob_mask(n, height, width, g):
    """One or a few large smooth regions covering 10-45 % of the image."""
    return _blob_mask(n, height, g, width, grid=(2, 5), cover=(0.10, 0.45))


def make_foreign_regions(x: torch.Tensor, pool: torch.Tensor, g: torch.Generator, p_region: float = 0.65,
                         pool_views: torch.Tensor | None = None, views: torch.Tensor | None = None):
    """Whole images x (N, C, H, W) in which a large region (an edge band or a big blob) is replaced by
    the same place of another good image from `pool`, with its brightness and contrast changed a
    little: a surface finished differently in one part. Each side is good on its own; only the
    comparison within the image shows the defect. With views (x's and the pool's, see
    core.inspect.views) the other image is of the same view: one of another shape, squeezed
    differently, would differ in geometry, which is easy to see and not what a defect looks like.
    Returns (images, target mask (N, 1, H, W)), the target only where the two really differ."""
    n, _, h, w = x.shape
    out, target = x.clone(), torch.zeros(n, 1, h, w)
    for i in range(n):
        if float(torch.rand(1, generator=g)) >= p_region:
            continue
        band = float(torch.rand(1, generator=g)) < 0.5
        m = (_edge_band_mask if band else _large_blob_mask)(1, h, w, g)[0]
        if views is not None and pool_views is not None:
            same = (pool_views == views[i]).nonzero().flatten()
            donor = pool[int(same[int(torch.randint(0, same.numel(), (1,), generator=g))])]
        else:
            donor = pool[int(torch.randint(0, pool.shape[0], (1,), generator=g))]
        if float(torch.rand(1, generator=g)) < 0.5:
            donor = donor.flip(-1)
        gain = math.exp(0.15 * float(torch.randn(1, generator=g)))
        offset = 0.2 * float(torch.randn(1, generator=g))
        out[i] = x[i] * (1 - m) + (donor * gain + offset) * m
        # Where the donor happens to match (same texture, same level) there is nothing to find.
        differs = blur((out[i] - x[i]).abs().amax(0, keepdim=True)[None], 3.0)[0] > 0.12
        target[i] = differs.float() * m
    return out, target
