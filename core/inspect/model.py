"""The networks: a fully convolutional VAE for images (with an optional segmentation head) and a
plain "textbook" conv VAE kept as the benchmark baseline. Each is built from a plain config dict
that is saved in the model folder's config.json, so a folder rebuilds exactly the same network.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_ARCH = {
    "type": "spatial_vae",
    "channels": 1,        # 1 grey, 3 colour
    "width": 16,          # channels of the first stage, doubled at each downsampling
    "depth": 3,           # stride-2 stages: latent map is 1/2**depth of the input
    "latent": 16,         # latent channels per latent position
    "seg_head": True,     # discriminative head trained on synthetic defects (DRAEM-style)
    "seg_width": 16,
}


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


class SpatialVAE(nn.Module):
    """Conv VAE whose latent is a small feature map (so any input size works and local structure
    stays local). The decoder has no skip connections: it can only redraw what the latent holds,
    which is what makes the reconstruction a "good part" prior. An optional head compares input
    and reconstruction and predicts a defect probability per pixel.
    """

    def __init__(self, arch: dict):
        super().__init__()
        a = {**DEFAULT_ARCH, **arch}
        self.arch = a
        c, w, d, z = a["channels"], a["width"], a["depth"], a["latent"]
        enc = [_block(c, w)]
        ch = w
        for i in range(d):
            nxt = min(w * 2 ** (i + 1), 256)
            enc += [_block(ch, nxt, 2), _block(nxt, nxt)]
            ch = nxt
        self.encoder = nn.Sequential(*enc)
        self.to_stats = nn.Conv2d(ch, 2 * z, 1)
        dec = [nn.Conv2d(z, ch, 1), nn.LeakyReLU(0.2, inplace=True)]
        for i in reversed(range(d)):
            nxt = w * 2 ** i if i > 0 else w
            nxt = min(nxt, 256)
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), _block(ch, nxt), _block(nxt, nxt)]
            ch = nxt
        dec += [nn.Conv2d(ch, c, 3, 1, 1)]
        self.decoder = nn.Sequential(*dec)
        self.seg = None
        if a["seg_head"]:
            s = a["seg_width"]
            # Input, reconstruction and their difference; one stride-2 stage widens the view.
            self.seg = nn.ModuleDict({
                "inp": _block(3 * c, s),
                "down": nn.Sequential(_block(s, 2 * s, 2), _block(2 * s, 2 * s),
                                      nn.Conv2d(2 * s, 2 * s, 3, 1, 2, dilation=2),
                                      nn.BatchNorm2d(2 * s), nn.LeakyReLU(0.2, inplace=True)),
                "up": _block(3 * s, s),
                "out": nn.Conv2d(s, 1, 1),
            })

    @property
    def multiple(self) -> int:
        return 2 ** (self.arch["depth"] + (1 if self.seg is not None else 0))

    def _encoder_with_stages(self, x):
        """The encoder's output and the ends of its stride-2 stages (layers 2, 4, ...)."""
        stages, h = [], x
        for index, layer in enumerate(self.encoder):
            h = layer(h)
            if index >= 2 and index % 2 == 0:
                stages.append(h)
        return h, stages

    def stage_widths(self) -> list[int]:
        """Channels of each stage output that _encoder_with_stages returns, in order."""
        return [self.encoder[i][0].out_channels for i in range(2, len(self.encoder), 2)]

    def split_channels(self, channels, device=None) -> list:
        return split_channels(self.stage_widths(), channels, device)

    def stage_features(self, x, channels=None):
        """(N, C, H, W) -> (N, sum of stage widths, H/4, W/4): what core.inspect.feature_stats models."""
        return _stage_features(self._encoder_with_stages(x)[1], x.shape[-2:], channels)

    def _posterior(self, h):
        mu, logvar = self.to_stats(h).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def encode(self, x):
        return self._posterior(self.encoder(x))

    def segment(self, x, recon):
        h0 = self.seg["inp"](torch.cat([x, recon, (x - recon).abs()], 1))
        h1 = self.seg["down"](h0)
        h1 = F.interpolate(h1, size=h0.shape[-2:], mode="nearest")
        return self.seg["out"](self.seg["up"](torch.cat([h0, h1], 1)))

    def forward(self, x, sample: bool = False, features: bool = False, channels=None):
        """(recon, mu, logvar, seg), plus the stage features when asked (one encoder pass for both;
        `channels` as in stage_features)."""
        h, stages = self._encoder_with_stages(x) if features else (self.encoder(x), None)
        mu, logvar = self._posterior(h)
        zlat = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        recon = self.decoder(zlat)
        seg = self.segment(x, recon) if self.seg is not None else None
        if features:
            return recon, mu, logvar, seg, _stage_features(stages, x.shape[-2:], channels)
        return recon, mu, logvar, seg


def split_channels(widths, channels, device=None) -> list:
    """Sorted indices into concatenated stage features (stages `widths` wide) -> per stage, the
    indices inside that stage (on `device`), None for a stage with none, or "all". Worked out once
    on the host, so scoring on a GPU never waits for data-dependent shapes."""
    channels = torch.as_tensor(channels).cpu()
    split, start = [], 0
    for width in widths:
        inside = channels[(channels >= start) & (channels < start + width)] - start
        start += width
        split.append(None if inside.numel() == 0 else "all" if inside.numel() == width else inside.to(device))
    return split


def _stage_features(stages, image_size, channels=None):
    """Stage outputs brought to a grid of 1/4 of the image and concatenated; with `channels`
    (sorted indices into that concatenation, or split_channels' answer) only those, picked before
    resizing, which saves most of the cost when few are wanted."""
    if channels is not None and not isinstance(channels, list):
        channels = split_channels([s.shape[1] for s in stages], channels, stages[0].device)
    size = (image_size[0] // 4, image_size[1] // 4)
    parts = []
    for index, s in enumerate(stages):
        pick = "all" if channels is None else channels[index]
        if pick is None:
            continue
        parts.append(_resize_like_adaptive_pool(s if isinstance(pick, str) else s[:, pick], size))
    return torch.cat(parts, 1)


def _resize_like_adaptive_pool(x, size):
    """adaptive_avg_pool2d(x, size), by the cheaper equal operation when the sizes divide: average
    pooling to shrink, repetition to grow (what adaptive pooling does then)."""
    h, w = x.shape[-2:]
    if (h, w) == size:
        return x
    if h % size[0] == 0 and w % size[1] == 0:
        return F.avg_pool2d(x, (h // size[0], w // size[1]))
    if size[0] % h == 0 and size[1] % w == 0:
        return x.repeat_interleave(size[0] // h, -2).repeat_interleave(size[1] // w, -1)
    return F.adaptive_avg_pool2d(x, size)


CONTEXT_ARCH = {"channels": 1, "width": 16, "depth": 4, "scale": 1}


class ContextSegmenter(nn.Module):
    """A U-Net over the whole image whose bottleneck also sees the image's mean feature, and the
    mean of each row and each column of features (strip pooling). Trained on "foreign regions"
    (core.inspect.synth.make_foreign_regions), it marks the part of a surface that does not belong
    with the rest of that same image: a band ground differently, a patch with another finish. Each
    side of such a border can look like good texture on its own, so the patch-sized VAE cannot see
    it; this network has the whole image in view.

    arch["scale"] > 1 runs it on the image shrunk by that factor: foreign regions are large, and a
    step costs scale² less, so it learns far more in the same training time.

    Its encoder's stages (after the first three downsamplings) are also features that
    core.inspect.feature_stats can model per position, beside the VAE encoder's (the
    context_features option): trained to tell a foreign surface from good, they describe a tile
    better (magnetic_tile, same trained networks: 0.881 vs 0.811 image AUROC as a map alone;
    bench/README.md).
    """

    FEATURE_STAGES = (1, 2, 3)  # indices into self.down

    def __init__(self, arch: dict):
        super().__init__()
        a = {**CONTEXT_ARCH, **arch}
        self.arch = a
        c, w, d = a["channels"], a["width"], a["depth"]
        widths = [min(w * 2 ** i, 128) for i in range(d + 1)]
        self.down = nn.ModuleList([_block(c, widths[0])] + [
            nn.Sequential(_block(widths[i], widths[i + 1], 2), _block(widths[i + 1], widths[i + 1]))
            for i in range(d)])
        top = widths[-1]
        self.context = nn.Sequential(nn.Conv2d(4 * top, top, 1), nn.LeakyReLU(0.2, inplace=True))
        up, ch = [], top
        for i in reversed(range(d)):  # each step up halves the width again, to the first stage's
            up.append(_block(ch + widths[i], widths[max(i - 1, 0)]))
            ch = widths[max(i - 1, 0)]
        self.up = nn.ModuleList(up)
        self.out = nn.Conv2d(ch, 1, 3, 1, 1)

    @property
    def multiple(self) -> int:
        return 2 ** self.arch["depth"] * self.arch["scale"]

    def stage_widths(self) -> list[int]:
        """Channels of each feature stage, in order."""
        return [self.down[i][-1][0].out_channels for i in self.FEATURE_STAGES if i < len(self.down)]

    def split_channels(self, channels, device=None) -> list:
        return split_channels(self.stage_widths(), channels, device)

    def stage_features(self, x, channels=None):
        """(N, C, H, W) -> (N, picked channels, H/4, W/4) of the feature stages."""
        return self._features(self._encode(self._shrink(x))[0], x.shape[-2:], channels)

    def _features(self, skips, image_size, channels):
        return _stage_features([skips[i] for i in self.FEATURE_STAGES if i < len(skips)], image_size, channels)

    def _shrink(self, x):
        scale = self.arch["scale"]
        return F.avg_pool2d(x, scale) if scale > 1 else x

    def forward(self, x, full: bool = True, features: bool = False, channels=None):
        """(N, C, H, W) -> (N, 1, H, W) logits of "foreign here"; with full=False at the network's
        own resolution (H / scale, W / scale), as training compares them. With features=True,
        (logits, stage features as stage_features gives them) from one pass."""
        skips, h = self._encode(self._shrink(x))
        logits = self._decode(skips, h)
        if self.arch["scale"] > 1 and full:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (logits, self._features(skips, x.shape[-2:], channels)) if features else logits

    def _encode(self, x):
        skips, h = [], x
        for layer in self.down:
            h = layer(h)
            skips.append(h)
        return skips, h

    def _decode(self, skips, h):
        whole = h.mean((2, 3), keepdim=True).expand_as(h)
        rows = h.mean(3, keepdim=True).expand_as(h)
        cols = h.mean(2, keepdim=True).expand_as(h)
        h = self.context(torch.cat([h, whole, rows, cols], 1))
        for layer, skip in zip(self.up, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = layer(torch.cat([h, skip], 1))
        return self.out(h)


class TextbookVAE(nn.Module):
    """The usual baseline: conv encoder, dense latent vector, conv decoder; fixed input size."""

    def __init__(self, arch: dict):
        super().__init__()
        self.arch = dict(arch)
        c, w, size, z = arch["channels"], arch.get("width", 32), arch["size"], arch.get("latent", 128)
        d = int(math.log2(size)) - 3  # down to 8x8
        enc, ch = [], c
        for i in range(d):
            nxt = min(w * 2 ** i, 256)
            enc += [nn.Conv2d(ch, nxt, 4, 2, 1), nn.BatchNorm2d(nxt), nn.LeakyReLU(0.2, inplace=True)]
            ch = nxt
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.ch = ch
        self.fc_mu = nn.Linear(ch * 64, z)
        self.fc_lv = nn.Linear(ch * 64, z)
        self.fc_dec = nn.Linear(z, ch * 64)
        dec = []
        for i in reversed(range(d)):
            nxt = min(w * 2 ** (i - 1), 256) if i > 0 else w
            dec += [nn.ConvTranspose2d(ch, nxt, 4, 2, 1), nn.BatchNorm2d(nxt), nn.LeakyReLU(0.2, inplace=True)]
            ch = nxt
        dec += [nn.Conv2d(ch, c, 3, 1, 1)]
        self.decoder = nn.Sequential(*dec)

    multiple = 1
    seg = None

    def forward(self, x, sample: bool = False):
        h = self.encoder(x)
        mu, logvar = self.fc_mu(h), self.fc_lv(h).clamp(-10, 10)
        zlat = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        recon = self.decoder(self.fc_dec(zlat).view(-1, self.ch, 8, 8))
        return recon, mu, logvar, None


def build(arch: dict) -> nn.Module:
    kind = arch.get("type", "spatial_vae")
    if kind == "spatial_vae":
        return SpatialVAE(arch)
    if kind == "textbook_vae":
        return TextbookVAE(arch)
    raise ValueError(f"unknown architecture type {kind!r}")


def for_inference(net: nn.Module) -> nn.Module:
    """A copy of `net` in eval mode with each batch norm folded into the convolution before it
    (PyTorch's fuse_conv_bn_eval; the norm becomes an identity, so module indices stay): the same
    results up to float rounding (1e-6 relative on the benchmark models' scores), 4-9 % faster
    scoring on a 2-core CPU (bench/README.md, twenty-fifth session). The original keeps its norms,
    for saving and for training on."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(net).eval()
    for seq in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, norm = seq[i], seq[i + 1]
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(norm, nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(conv, norm, transpose=isinstance(conv, nn.ConvTranspose2d))
                seq[i + 1] = nn.Identity()
    return folded


def kl_divergence(mu, logvar):
    """KL(q(z|x) || N(0, I)), mean over latent elements."""
    return 0.5 * torch.mean(mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_kernel(sigma: float, device=None):
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur(x, sigma: float):
    """Separable Gaussian blur of a (N, C, H, W) tensor, reflect-padded (a direction shorter than
    the kernel's radius is left as it is).

    Done as two products with banded matrices: a one-channel convolution with a long kernel is
    4-13x slower on the CPU (oneDNN) and uses a slow path on GPUs; the matrices give the same
    numbers up to rounding."""
    if sigma <= 0:
        return x
    rows, cols = _blur_matrices(x.shape[-2], x.shape[-1], float(sigma), str(x.device), x.dtype)
    return rows @ (x @ cols)


@functools.lru_cache(maxsize=64)
def _blur_matrices(height: int, width: int, sigma: float, device: str, dtype):
    """(rows, cols): rows @ x blurs the columns of an image, x @ cols its rows. Built by blurring
    the identity with the reference convolution, so edges are handled exactly as it does."""
    # Plain tensors even when first asked for under inference mode: training reuses them in autograd.
    with torch.inference_mode(False), torch.no_grad():
        k = gaussian_kernel(sigma)
        r = k.numel() // 2
        cols = torch.eye(width)
        if min(r, width - 1) == r:
            cols = F.conv2d(F.pad(cols[None, None], (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))[0, 0]
        rows = torch.eye(height)
        if min(r, height - 1) == r:
            rows = F.conv2d(F.pad(rows[None, None], (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))[0, 0]
        # the convolution blurred each row of eye(width): row j is where pixel j spreads to, so
        # x @ cols blurs rows; for columns it blurred each column of eye(height): rows @ x.
        return rows.to(device=device, dtype=dtype).contiguous(), cols.to(device=device, dtype=dtype).contiguous()


def ssim_map(a, b, sigma: float = 1.5, c1: float = 0.01 ** 2 * 16, c2: float = 0.03 ** 2 * 16):
    """Per-pixel SSIM of two (N, C, H, W) tensors in the normalised range (about [-2, 2])."""
    mu_a, mu_b = blur(a, sigma), blur(b, sigma)
    saa = blur(a * a, sigma) - mu_a ** 2
    sbb = blur(b * b, sigma) - mu_b ** 2
    sab = blur(a * b, sigma) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
