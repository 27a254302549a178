"""Feature statistics (core.inspect.feature_stats): the Gaussians per region and their distances.
The map they add to a trained inspector's own is tested in test_inspect_engine.py."""

import core.inspect  # noqa: F401  (first: importing core sets how OpenMP threads wait, before torch loads)
import pytest
import torch

from core.inspect import feature_stats as FS


def _features(n, d=12, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, h, w, generator=g)
    # correlated channels and a position-dependent mean, so the regions really differ
    mix = torch.randn(d, d, generator=g) * 0.5 + torch.eye(d)
    pos = torch.linspace(-2, 2, h)[None, None, :, None]
    return torch.einsum("ndhw,de->nehw", base, mix) + pos


def _brute_force(feats, gauss):
    """Mahalanobis distance of every position to its region's Gaussian, one position at a time."""
    f = feats[:, gauss.channels]
    n, d, h, w = f.shape
    index = FS.cell_index(h, w, gauss.cells).reshape(h, w)
    out = torch.empty(n, h, w)
    for i in range(h):
        for j in range(w):
            c = index[i, j]
            v = f[:, :, i, j] - gauss.mean[c]
            out[:, i, j] = torch.einsum("nd,de,ne->n", v, gauss.precision[c], v).clamp_min(0).sqrt()
    return out


# regions of equal size (batched sums and distances), and of unequal size (region by region)
@pytest.mark.parametrize("size, cells", [((8, 8), 2), ((10, 6), 3)])
def test_distance_is_the_mahalanobis_distance_to_the_region(size, cells):
    h, w = size
    good = _features(200, h=h, w=w)
    picked = FS.pick_channels(12, 8, seed=1)
    gauss = FS.FeatureGaussians.fit([good[:70], good[70:]], picked, cells=cells)
    test = _features(5, h=h, w=w, seed=2) + 0.5
    assert torch.allclose(gauss.distance(test), _brute_force(test, gauss), rtol=1e-4, atol=1e-4)
    # the fitted mean is the regions' mean; a good image is closer than a shifted one
    first = FS.cell_index(h, w, cells).reshape(h, w) == 0
    assert torch.allclose(gauss.mean[0], good[:, picked][..., first].mean(dim=(0, 2)), atol=1e-5)
    assert gauss.distance(good[:5]).mean() < gauss.distance(good[:5] + 3).mean()
    # the covariance too: the precision inverts the (slightly shrunk) sample covariance of region 0
    v = good[:, picked][..., first].permute(0, 2, 1).reshape(-1, len(picked)).double()
    cov = torch.cov(v.T)
    cov = cov + FS.SHRINK * cov.diagonal().mean() * torch.eye(len(picked), dtype=cov.dtype)
    assert torch.allclose(gauss.precision[0].double(), torch.linalg.inv(cov), rtol=1e-3, atol=1e-3)
    # features given already picked fit the same Gaussians
    again = FS.FeatureGaussians.fit([good[:, picked]], picked, cells=cells, picked=True)
    assert torch.allclose(again.mean, gauss.mean, atol=1e-5)


def test_fitting_batch_by_batch_equals_fitting_at_once():
    good = _features(60)
    picked = torch.arange(12)
    whole = FS.FeatureGaussians.fit([good], picked, cells=4)
    parts = FS.FeatureGaussians.fit([good[:7], good[7:30], good[30:]], picked, cells=4)
    assert torch.allclose(whole.mean, parts.mean, atol=1e-5)
    assert torch.allclose(whole.precision, parts.precision, rtol=1e-3, atol=1e-3)
    again = FS.FeatureGaussians.from_tensors(whole.tensors(), 4)
    assert torch.equal(again.distance(good[:3]), whole.distance(good[:3]))
    with pytest.raises(ValueError):
        FS.FeatureGaussians.fit([], picked)


@pytest.mark.parametrize("size, cells", [((8, 8), 2), ((10, 6), 3)])
def test_a_large_mean_does_not_cost_the_covariance_its_precision(size, cells):
    # Features far from zero relative to their spread: sums of squares in float32 would cancel to
    # noise (a mean of 1000 and an sd of about 1 leave 1e-6 of the sum's digits for the variance).
    h, w = size
    good = _features(150, h=h, w=w) + 1000.0
    picked = torch.arange(12)
    gauss = FS.FeatureGaussians.fit([good[:40], good[40:]], picked, cells=cells)
    first = FS.cell_index(h, w, cells).reshape(h, w) == 0
    v = good[..., first].permute(0, 2, 1).reshape(-1, 12).double()
    cov = torch.cov(v.T)
    cov = cov + FS.SHRINK * cov.diagonal().mean() * torch.eye(12, dtype=cov.dtype)
    assert torch.allclose(gauss.mean[0].double(), v.mean(0), rtol=0, atol=1e-3)
    assert torch.allclose(gauss.precision[0].double(), torch.linalg.inv(cov), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("size", [64, 96])
def test_picked_stage_features_equal_the_picked_channels_of_all(size):
    """Picking the channels before resizing the stages (the scoring path) gives the same numbers
    as resizing every channel with adaptive pooling and picking afterwards (what was fitted)."""
    import torch.nn.functional as F

    from core.inspect import model as M

    torch.manual_seed(0)
    net = M.build({**M.DEFAULT_ARCH, "channels": 1}).eval()
    x = torch.randn(2, 1, size, size)
    with torch.inference_mode():
        _, stages = net._encoder_with_stages(x)
        grid = stages[1].shape[-2:]
        reference = torch.cat([F.adaptive_avg_pool2d(s, grid) for s in stages], 1)
        picked = FS.pick_channels(reference.shape[1], 100, seed=3)
        assert torch.allclose(net.stage_features(x), reference, atol=1e-6)
        assert torch.allclose(net.stage_features(x, picked), reference[:, picked], atol=1e-6)
        gauss = FS.FeatureGaussians.fit([reference], picked, cells=4)
        assert torch.allclose(gauss.distance(net(x, features=True, channels=picked)[4], picked=True),
                              gauss.distance(reference), atol=1e-4)


@pytest.mark.parametrize("scale, size", [(1, 64), (2, 128)])
def test_context_segmenter_features_come_with_its_map_from_one_pass(scale, size):
    """The context segmenter's stages 1-3 on a grid of a quarter of the image, picked channels the
    same as picking from all, and its logits unchanged when the features come along."""
    import torch.nn.functional as F

    from core.inspect import model as M

    torch.manual_seed(0)
    net = M.ContextSegmenter({"channels": 1, "scale": scale}).eval()
    x = torch.randn(2, 1, size, size)
    with torch.inference_mode():
        skips, _ = net._encode(F.avg_pool2d(x, scale) if scale > 1 else x)
        grid = (size // 4, size // 4)
        reference = torch.cat([F.adaptive_avg_pool2d(skips[i], grid) for i in (1, 2, 3)], 1)
        assert net.stage_widths() == [32, 64, 128] and reference.shape[1] == 224
        picked = FS.pick_channels(reference.shape[1], 100, seed=3)
        assert torch.allclose(net.stage_features(x), reference, atol=1e-6)
        logits, feats = net(x, features=True, channels=net.split_channels(picked))
        assert torch.allclose(feats, reference[:, picked], atol=1e-6)
        assert torch.equal(logits, net(x)) and logits.shape == (2, 1, size, size)


@pytest.mark.parametrize("grid, images, channels, expected", [
    (32, 686, 100, 32),   # magnetic_tile at 128 px: one Gaussian per position
    (64, 900, 100, 32),   # deeppcb at 256 px: capped at CELLS, 2 x 2 positions each
    (48, 686, 100, 24),   # 192 px: the largest divisor of the grid, so regions stay equal
    (32, 50, 100, 8),     # few images: regions of 4 x 4 positions (800 samples each)
    (16, 12, 100, 2),     # a handful: 8 x 8 positions each
    (4, 1, 100, 1),       # one image: a single region over the whole grid
])
def test_regions_are_as_fine_as_the_samples_allow(grid, images, channels, expected):
    cells = FS.cells_for(grid, images, channels)
    assert cells == expected and grid % cells == 0
    assert cells == 1 or (grid // cells) ** 2 * images >= FS.MIN_SAMPLES_PER_CHANNEL * channels
