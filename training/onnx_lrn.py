"""The paper's local response normalization written for the ONNX graph (`alexnet export`).

`F.local_response_norm` exports as Mul, Reshape, Pad, AveragePool, Squeeze, Mul, Add, Pow
and Div. That form is slow in onnxruntime, most of all in the int8 graph:

- Reshape and AveragePool (the channel window sum taken as a pooling over a reshaped
  tensor) are tied to the NCHW layout, so onnxruntime cannot carry the NHWC layout of its
  int8 convolutions through the LRN: it transposes before and after it, and the max pool
  that follows runs its slow NCHW kernel instead of the NHWC uint8 one.
- Pow(t, 0.75) on every activation is a scalar powf.

`ChannelWindowLRN` computes the same formula as a 1x1 convolution with a banded weight
(the window sum over adjacent channels; alpha its weight, k its bias) and elementwise ops.
When beta is the paper's 0.75 the layer is x times a factor, t ** -0.75 written as
sqrt(sqrt(t)) / t. In the int8 graph the convolution is quantized like the others and the
product is a uint8 QLinearMul (`training.quantize` quantizes Mul), so the whole layer
stays in onnxruntime's NHWC int8 chain and only the factor is computed in float. The
graph computes the paper's formula; the export checks it against eager PyTorch
(`training.export.verify_onnx`) as for any model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from training.model import LocalResponseNorm


def window_weight(channels: int, size: int, alpha: float) -> torch.Tensor:
    """(C, C, 1, 1): alpha where input channel j is in output channel i's window.

    The window is j = i - size // 2 .. i + (size - 1) // 2, clipped to 0 .. C - 1, as
    `F.local_response_norm` pads (and as the paper's sum bounds say for odd sizes).
    """
    i = torch.arange(channels)[:, None]
    j = torch.arange(channels)[None, :]
    inside = (j >= i - size // 2) & (j <= i + (size - 1) // 2)
    return (inside.to(torch.float32) * alpha)[:, :, None, None]


class ChannelWindowLRN(nn.Module):
    """`LocalResponseNorm`'s formula (same constants) for a fixed number of channels.

    b[i] = a[i] / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} a[j]^2) ** beta
    """

    def __init__(self, lrn: LocalResponseNorm, channels: int) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = lrn.size, lrn.alpha, lrn.beta, lrn.k
        self.register_buffer("weight", window_weight(channels, lrn.size, lrn.alpha))
        self.register_buffer("bias", torch.full((channels,), float(lrn.k)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(x * x, self.weight, self.bias)  # k + alpha * window sum of squares
        if self.beta == 0.75:
            return x * (torch.sqrt(torch.sqrt(t)) / t)  # x * t ** -0.75
        return x / t**self.beta

    def extra_repr(self) -> str:
        return (f"channels={self.weight.shape[0]}, size={self.size}, alpha={self.alpha}, "
                f"beta={self.beta}, k={self.k}")  # fmt: skip


def for_onnx(module: nn.Module) -> nn.Module:
    """A copy of `module` with every `LocalResponseNorm` replaced by `ChannelWindowLRN`;
    `module` itself is left as it is (the eager reference the export is checked against);
    a module without LRN is returned as it is.

    An LRN's channel count is that of the last convolution before it in its `nn.Sequential`.
    """
    if not any(isinstance(m, LocalResponseNorm) for m in module.modules()):
        return module  # nothing to replace (bn, torchvision)
    copied = copy.deepcopy(module)
    for parent in copied.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        channels = None
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                channels = child.out_channels
            elif isinstance(child, LocalResponseNorm):
                if channels is None:
                    raise ValueError(f"no convolution before the LRN {name!r}: channels unknown")
                setattr(parent, name, ChannelWindowLRN(child, channels))
    if any(isinstance(m, LocalResponseNorm) for m in copied.modules()):
        raise ValueError("an LRN outside an nn.Sequential after a convolution was left as it is")
    return copied
