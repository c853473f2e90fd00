"""AlexNet and its variants.

`build_model(arch, num_classes)` is the one entry point. Every variant shares the
module layout of `torchvision.models.alexnet` (`features`, `avgpool`, `classifier`
with fc6 / fc7 / fc8 at classifier indices 1 / 4 / 6), so the same code returns fc7
for all of them and torchvision's published state_dict loads into `torchvision`.

Variants:
    paper:           the 2012 paper: 96/256/384/384/256 kernels, LRN after conv1 and
                     conv2, conv2/4/5 grouped in two halves (the two-GPU connectivity),
                     227x227 input. 60,965,224 parameters for 1000 classes.
    paper-ungrouped: the same network on one device, without the grouping.
                     62,378,344 parameters for 1000 classes.
    torchvision:     torchvision's single-GPU layout ("one weird trick"): 64/192/384/256/256,
                     no LRN, 224x224 input, conv1 padded by 2. 61,100,840 parameters.
    bn:              the paper's layout (ungrouped) with batch normalization after every
                     convolution instead of LRN; trains quickly from scratch on small data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from core import constants as C


class LocalResponseNorm(nn.Module):
    """Local response normalization exactly as the paper writes it (section 3.3).

    b[i] = a[i] / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} a[j]^2) ** beta

    `torch.nn.LocalResponseNorm` divides alpha by n; this layer takes the paper's alpha
    and multiplies it back, so the constants read as in the paper.

    Args:
        size: n, the number of adjacent kernel maps summed over.
        alpha: the paper's alpha (not divided by n).
        beta: exponent.
        k: additive constant.
    """

    def __init__(
        self,
        size: int = C.LRN_SIZE,
        alpha: float = C.LRN_ALPHA,
        beta: float = C.LRN_BETA,
        k: float = C.LRN_K,
    ) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.local_response_norm(x, self.size, self.alpha * self.size, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


@dataclass(frozen=True)
class Variant:
    """What distinguishes one AlexNet variant from another."""

    widths: tuple[int, int, int, int, int]  # conv1..conv5 output channels
    groups: tuple[int, int, int, int, int]  # conv1..conv5 groups
    crop_size: int
    conv1_padding: int
    norm: str  # "lrn", "bn" or "none"
    adaptive_pool: bool  # torchvision pools to 6x6 adaptively; the paper needs no pooling there


VARIANTS: dict[str, Variant] = {
    "paper": Variant((96, 256, 384, 384, 256), (1, 2, 1, 2, 2), C.PAPER_CROP, 0, "lrn", False),
    "paper-ungrouped": Variant(
        (96, 256, 384, 384, 256), (1, 1, 1, 1, 1), C.PAPER_CROP, 0, "lrn", False
    ),
    "torchvision": Variant(
        (64, 192, 384, 256, 256), (1, 1, 1, 1, 1), C.TORCHVISION_CROP, 2, "none", True
    ),
    "bn": Variant((96, 256, 384, 384, 256), (1, 1, 1, 1, 1), C.PAPER_CROP, 0, "bn", False),
}


class AlexNet(nn.Module):
    """Five convolutional and three fully connected layers.

    `forward(x)` returns the logits; `forward(x, return_fc7=True)` returns
    `(logits, fc7)`, fc7 being the last hidden layer after its ReLU.
    """

    def __init__(self, variant: Variant, num_classes: int, dropout: float = C.DROPOUT) -> None:
        super().__init__()
        self.variant = variant
        self.features = _features(variant)
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6)) if variant.adaptive_pool else nn.Identity()
        width = C.FC7_DIM  # fc6 and fc7: 4096 units each
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(variant.widths[4] * 6 * 6, width),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(width, width),  # fc7
            nn.ReLU(inplace=True),
            nn.Linear(width, num_classes),  # fc8
        )

    @property
    def crop_size(self) -> int:
        return self.variant.crop_size

    def forward(
        self, x: torch.Tensor, return_fc7: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.features(x)  # (N, 256, 6, 6)
        x = torch.flatten(self.avgpool(x), 1)  # (N, 9216)
        fc7 = self.classifier[:6](x)  # (N, 4096), after ReLU
        logits = self.classifier[6](fc7)  # (N, num_classes)
        return (logits, fc7) if return_fc7 else logits


def _features(v: Variant) -> nn.Sequential:
    """conv1 .. pool5. Layers keep torchvision's indices when `v.norm == "none"`."""

    def conv(i: int, cin: int, kernel: int, stride: int, padding: int) -> list[nn.Module]:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, v.widths[i], kernel, stride, padding, groups=v.groups[i])
        ]
        if v.norm == "bn":
            layers.append(nn.BatchNorm2d(v.widths[i]))
        layers.append(nn.ReLU(inplace=True))
        if v.norm == "lrn" and i in (0, 1):
            layers.append(LocalResponseNorm())
        return layers

    def pool() -> nn.Module:
        return nn.MaxPool2d(kernel_size=3, stride=2)  # overlapping pooling, s=2 < z=3

    w = v.widths
    return nn.Sequential(
        *conv(0, 3, 11, 4, v.conv1_padding), pool(),  # (N, w0, 55, 55) -> (N, w0, 27, 27)
        *conv(1, w[0], 5, 1, 2), pool(),  # (N, w1, 27, 27) -> (N, w1, 13, 13)
        *conv(2, w[1], 3, 1, 1),  # (N, w2, 13, 13)
        *conv(3, w[2], 3, 1, 1),  # (N, w3, 13, 13)
        *conv(4, w[3], 3, 1, 1), pool(),  # (N, w4, 13, 13) -> (N, w4, 6, 6)
    )  # fmt: skip


def weight_layers(model: AlexNet) -> dict[str, nn.Conv2d | nn.Linear]:
    """The eight learned layers by their paper names, conv1 .. fc8."""
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.classifier if isinstance(m, nn.Linear)]
    names = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    return dict(zip(names, convs + fcs, strict=True))


def init_paper(model: AlexNet) -> None:
    """The paper's initialization (section 5).

    Weights from N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6 and fc7 ("accelerates
    the early stages of learning by providing the ReLUs with positive inputs"), 0 elsewhere.
    """
    for name, layer in weight_layers(model).items():
        nn.init.normal_(layer.weight, mean=0.0, std=0.01)
        nn.init.constant_(
            layer.bias, 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        )


def init_caffe(model: AlexNet) -> None:
    """Caffe's bvlc_alexnet initialization, which its authors found trains where the paper's
    bias of 1 "gave flat loss": biases 0.1 instead of 1, and std 0.005 for fc6 and fc7."""
    for name, layer in weight_layers(model).items():
        nn.init.normal_(layer.weight, mean=0.0, std=0.005 if name in ("fc6", "fc7") else 0.01)
        nn.init.constant_(
            layer.bias, 0.1 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        )


def init_he(model: AlexNet) -> None:
    """He-normal (fan-in) convolutions, Caffe's fully connected layers.

    For `bn`: batch normalization makes a convolution's output independent of its weights'
    scale, so tiny N(0, 0.01) weights only make every SGD step huge relative to them (the
    effective learning rate grows as 1 / |w|^2); He's scale keeps conv1's steps sane.
    """
    init_caffe(model)
    for name, layer in weight_layers(model).items():
        if name.startswith("conv"):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(layer.bias)


INITS: dict[str, Callable[[AlexNet], None]] = {
    "paper": init_paper,
    "caffe": init_caffe,
    "he": init_he,
}

# The initialization each variant gets unless asked otherwise: the paper's for the paper's
# network; Caffe's for torchvision's layout, which the paper's bias of 1 can stall; He's
# convolutions for the batch-normalized one.
DEFAULT_INIT = {"paper": "paper", "paper-ungrouped": "paper", "torchvision": "caffe", "bn": "he"}


def build_model(
    arch: str, num_classes: int, init: str | None = None, dropout: float = C.DROPOUT
) -> AlexNet:
    """Build an AlexNet variant, initialised.

    Args:
        arch: one of `VARIANTS` ("paper", "paper-ungrouped", "torchvision", "bn").
        num_classes: size of fc8.
        init: one of `INITS` ("paper", "caffe", "he"); None for the variant's `DEFAULT_INIT`.
        dropout: dropout probability before fc6 and fc7.
    """
    if arch not in VARIANTS:
        raise ValueError(f"Unknown arch {arch!r}. Only {', '.join(VARIANTS)} are supported.")
    init = DEFAULT_INIT[arch] if init is None else init
    if init not in INITS:
        raise ValueError(f"Unknown init {init!r}. Only {', '.join(INITS)} are supported.")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    model = AlexNet(VARIANTS[arch], num_classes, dropout)
    INITS[init](model)
    return model
