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
