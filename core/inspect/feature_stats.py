"""Feature statistics: how unusual a position's encoder features are for its region of the image.

After training, the encoders the inspector trained itself (no pretrained network) describe every
position of the good training images by their stage features: the VAE's, and with the
context_features option the context segmenter's (model.ContextSegmenter). One Gaussian per region of a
cells x cells grid models each (PaDiM's idea). The log of the Mahalanobis distance of a new image's
features is another anomaly map, which the inspector adds to its other maps (each centred and
scaled by its median and upper tail on held-out good images; see score.Inspector.fit_combination).
Why: on magnetic_tile the segmentation map alone misses large low-contrast "uneven" areas that the
feature statistics see (figures in bench/README.md). A random subset of the channels keeps the
Gaussians to at most 41 MB in memory and 21 MB on disk (one triangle of each precision matrix) per
encoder and view (32 x 32 regions of 100 channels; core.inspect.views); on a 2-core CPU at 128 px
their distances and the context map together cost about half the VAE's forward pass.
"""

from __future__ import annotations

import torch

CELLS = 32        # at most; one Gaussian per position of the feature grid where the data allow
CHANNELS = 100
MIN_SAMPLES_PER_CHANNEL = 4  # samples (positions x images) each Gaussian needs per feature channel
SHRINK = 0.01   # covariance + SHRINK * mean variance * I: stays invertible with few images


def cell_index(height: int, width: int, cells: int) -> torch.Tensor:
    """The region (0 .. cells² - 1) of every position of a height x width grid, row-major."""
    rows = torch.arange(height) * cells // height
    cols = torch.arange(width) * cells // width
    return (rows[:, None] * cells + cols[None, :]).reshape(-1)


def cells_for(grid: int, images: int, channels: int) -> int:
    """The finest grid of regions (a divisor of the feature grid, so regions are equal) whose
    Gaussians each see enough samples. Finer is better where the data allow: on magnetic_tile
    one Gaussian per position (32 x 32 at 128 px) gave the feature map alone 0.826 image AUROC
    against 0.730 with 8 x 8 regions, and the summed map 0.826 against 0.809; on deeppcb no
    change (bench/README.md)."""
    best = 1
    for cells in range(1, min(CELLS, grid) + 1):
        if grid % cells == 0 and (grid // cells) ** 2 * images >= MIN_SAMPLES_PER_CHANNEL * channels:
            best = cells
    return best


def pick_channels(available: int, wanted: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(available, generator=g)[:min(wanted, available)].sort().values


def _by_region(feats: torch.Tensor, cells: int) -> torch.Tensor:
    """(N, d, h, w) with h, w multiples of cells -> (cells², N * positions per region, d), regions
    row-major and each region's positions in (image, row, column) order. Contiguous: with one
    position per region the reshape is a strided view, and batched products over it copied each
    region's matrix apart (3x slower distances at 32 x 32 regions, 2x slower fits)."""
    n, d, h, w = feats.shape
    return (feats.reshape(n, d, cells, h // cells, cells, w // cells).permute(2, 4, 0, 3, 5, 1)
            .reshape(cells * cells, -1, d).contiguous())


class FeatureGaussians:
    """Per-region mean and precision of the picked feature channels."""

    def __init__(self, mean: torch.Tensor, precision: torch.Tensor, channels: torch.Tensor, cells: int):
        self.mean, self.precision, self.channels, self.cells = mean, precision, channels, int(cells)

    @classmethod
    def fit(cls, feature_batches, channels: torch.Tensor, cells: int = CELLS,
            picked: bool = False) -> "FeatureGaussians":
        """feature_batches: an iterable of (N, C, h, w) features of good images (picked: already
        only `channels`, in order). Accumulates sums batch by batch, so the features of the whole
        training set never sit in memory. The sums are float32 around each region's mean in the
        first batch, which keeps the covariance's cancellation small: float64 sums took twice as
        long (900 boards at 256 px: 10.1 s per encoder on 2 cores, bench/README.md)."""
        total = sums = outer = index = shift = None
        for feats in feature_batches:
            feats = (feats if picked else feats[:, channels.to(feats.device)]).float()
            n, d, h, w = feats.shape
            equal = h % cells == 0 and w % cells == 0  # regions of equal size: one batched product
            if equal:
                regions = _by_region(feats, cells)
            else:
                flat = feats.permute(0, 2, 3, 1).reshape(n, h * w, d)
                if index is None:
                    index = cell_index(h, w, cells).to(feats.device)
                regions = [flat[:, index == c].reshape(-1, d) for c in range(cells * cells)]
            if shift is None:
                shift = (regions.mean(1) if equal else torch.stack([v.mean(0) for v in regions]))
                total = torch.zeros(cells * cells, dtype=torch.float64, device=feats.device)
                sums = torch.zeros(cells * cells, d, device=feats.device)
                outer = torch.zeros(cells * cells, d, d, device=feats.device)
            if equal:
                v = regions - shift[:, None]
                total += v.shape[1]
                sums += v.sum(1)
                outer.baddbmm_(v.transpose(1, 2), v)
                continue
            for c, v in enumerate(regions):
                v = v - shift[c]
                total[c] += v.shape[0]
                sums[c] += v.sum(0)
                outer[c] += v.T @ v
        if total is None:
            raise ValueError("no features to fit")
        sums, outer, shift = sums.double(), outer.double(), shift.double()
        n = total.clamp_min(2)[:, None, None]
        offset = sums / n[..., 0]  # the means' offsets from the shift
        cov = (outer - n * offset[:, :, None] * offset[:, None, :]) / (n - 1)
        eye = torch.eye(cov.shape[-1], dtype=torch.float64, device=cov.device)
        cov = cov + SHRINK * cov.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-8)[:, None, None] * eye
        # All regions at once: Cholesky factors per matrix (no batched LU, which MKL rejects for some
        # batch shapes on the CPU), half the time of a Python loop over 1024 regions.
        precision = torch.cholesky_inverse(torch.linalg.cholesky(cov))
        precision = (precision + precision.transpose(1, 2)) / 2  # exactly symmetric: stored as one triangle
        return cls((shift + offset).float(), precision.float(), channels.cpu(), cells)

    def to(self, device) -> "FeatureGaussians":
        return FeatureGaussians(self.mean.to(device), self.precision.to(device), self.channels, self.cells)

    def distance(self, feats: torch.Tensor, picked: bool = False) -> torch.Tensor:
        """(N, C, h, w) features -> (N, h, w) Mahalanobis distance to the position's region.
        picked: the features are already this model's channels, in order (stage_features(channels=))."""
        feats = (feats if picked else feats[:, self.channels.to(feats.device)]).float()
        n, d, h, w = feats.shape
        cells = self.cells
        if h % cells == 0 and w % cells == 0:
            # Regions of equal size (the usual case): one batched product for all of them.
            kh, kw = h // cells, w // cells
            v = _by_region(feats, cells) - self.mean[:, None]
            d2 = (torch.bmm(v, self.precision) * v).sum(-1)
            d2 = d2.reshape(cells, cells, n, kh, kw).permute(2, 0, 3, 1, 4).reshape(n, h, w)
            return d2.clamp_min(0).sqrt()
        flat = feats.permute(0, 2, 3, 1).reshape(n, h * w, d)
        index = cell_index(h, w, self.cells).to(feats.device)
        out = torch.empty(n, h * w, device=feats.device)
        for c in range(self.cells * self.cells):
            where = (index == c).nonzero().flatten()
            v = flat[:, where] - self.mean[c]
            out[:, where] = ((v @ self.precision[c]) * v).sum(-1)
        return out.clamp_min(0).sqrt().reshape(n, h, w)

    def tensors(self, prefix: str = "features.") -> dict:
        return {prefix + "mean": self.mean.cpu().contiguous(),
                prefix + "precision_upper": pack_symmetric(self.precision.cpu()),
                prefix + "channels": self.channels.cpu().contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict, cells: int, prefix: str = "features.",
                     channels: torch.Tensor | None = None) -> "FeatureGaussians":
        """channels: where they are stored under another prefix (views share view 0's)."""
        channels = tensors[prefix + "channels"] if channels is None else channels
        return cls(tensors[prefix + "mean"], stored_precision(tensors, prefix), channels.long(), cells)


def pack_symmetric(m: torch.Tensor) -> torch.Tensor:
    """(R, d, d) symmetric -> (R, d (d + 1) / 2), the upper triangle row by row. The precision
    matrices were 94 % of a model folder (magnetic_tile, four views: 113 of 120 MB)."""
    i, j = torch.triu_indices(m.shape[-1], m.shape[-1])
    return m[:, i, j].contiguous()


def unpack_symmetric(packed: torch.Tensor, d: int) -> torch.Tensor:
    i, j = torch.triu_indices(d, d)
    full = packed.new_zeros(packed.shape[0], d, d)
    full[:, i, j] = packed
    full[:, j, i] = packed
    return full


def stored_precision(tensors: dict, prefix: str) -> torch.Tensor:
    """The precision matrices saved under `prefix`: one triangle, or (models saved before
    2026-11-28) the full matrices."""
    if prefix + "precision" in tensors:
        return tensors[prefix + "precision"]
    return unpack_symmetric(tensors[prefix + "precision_upper"], tensors[prefix + "mean"].shape[-1])
