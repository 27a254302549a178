"""conv_layout: conv weights in channels-last order on the CPU, the same outputs as before."""

import torch

from core import device as devices
from core.inspect import model as M


def test_cpu_conv_weights_become_channels_last_and_outputs_stay_equal():
    torch.manual_seed(0)
    net = M.ContextSegmenter({"channels": 1, "scale": 1}).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.inference_mode():
        before = net(x)
    assert devices.conv_layout(net, torch.device("cpu")) is net
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    with torch.inference_mode():
        after = net(x)
    assert torch.allclose(before, after, atol=1e-4)


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def test_training_runs_in_bfloat16_only_on_a_cpu_that_has_it_and_scoring_stays_float32():
    flags = _cpuinfo_flags()
    if flags:  # Linux: what the CPU says of itself
        assert devices.cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16", "amx_tile"} & flags)
    conv = torch.nn.Conv2d(1, 4, 3)
    x = torch.randn(1, 1, 8, 8)
    with devices.training_autocast(torch.device("cpu")):
        trained = conv(x)
    with devices.autocast(torch.device("cpu")):
        scored = conv(x)
    assert trained.dtype == (torch.bfloat16 if devices.cpu_has_native_bf16() else torch.float32)
    assert scored.dtype == torch.float32
    assert conv.weight.dtype == torch.float32
