"""Test-time predictions of one network or of several averaged (the paper's "5 CNNs" rows).

One network: the softmax of the centre crop, or the average of the softmax over the ten
crops (`ten_crop_probs`). Several networks, an `Ensemble`: the average of their softmax
outputs, each member with its own normalization and crop size; `fc7` is the first
member's, the vector a gallery searches with.

    ckpts = load_members(["runs/a/best.pt", "runs/b/best.pt"])  # labels must agree
    ensemble = Ensemble.from_checkpoints(ckpts)
    probs, fc7 = ensemble(images)           # uint8 (N, 3, 256, 256) -> ten-crop averages
    probs = ensemble.centre_probs(images)   # the centre crop only
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.presets import CenterCrop, Normalize, TenCrop, normalize_from


def ten_crop_probs(model: nn.Module, images: torch.Tensor, normalize: Normalize, crop_size: int):
    """Average softmax and fc7 over the ten crops.

    Args:
        model: an AlexNet in eval mode.
        images: uint8 (N, 3, 256, 256).
        normalize: the checkpoint's normalization.
        crop_size: the variant's crop size.

    Returns:
        (probs (N, classes), fc7 (N, 4096)), both averaged over the ten crops.
    """
    crops = TenCrop(crop_size)(normalize(images))  # (N, 10, 3, c, c)
    n = crops.shape[0]
    logits, fc7 = model(crops.flatten(0, 1), return_fc7=True)  # (N*10, K), (N*10, 4096)
    probs = F.softmax(logits.float(), dim=1).view(n, 10, -1).mean(1)
    return probs, fc7.float().view(n, 10, -1).mean(1)


def centre_crop_probs(
    model: nn.Module, images: torch.Tensor, normalize: Normalize, crop_size: int
) -> torch.Tensor:
    """Softmax of the central crop: uint8 (N, 3, 256, 256) -> (N, classes)."""
    return F.softmax(model(CenterCrop(crop_size)(normalize(images))).float(), dim=1)


class Ensemble(nn.Module):
    """Networks whose softmax outputs are averaged; each has its own normalization and crop."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        normalizes: Sequence[Normalize],
        crop_sizes: Sequence[int],
    ) -> None:
        super().__init__()
        if not len(models) == len(normalizes) == len(crop_sizes) > 0:
            raise ValueError("an ensemble needs one normalization and crop size per network")
        self.models = nn.ModuleList(m.eval() for m in models)
        self.normalizes = nn.ModuleList(normalizes)
        self.crop_sizes = list(crop_sizes)

    @classmethod
    def from_checkpoints(cls, ckpts: Sequence[dict]) -> Ensemble:
        """The networks of loaded checkpoints, in eval mode, in their order."""
        return cls([model_from_checkpoint(c) for c in ckpts],
                   [normalize_from(c["normalization"]) for c in ckpts],
                   [c["crop_size"] for c in ckpts])  # fmt: skip

    def members(self) -> list[tuple[nn.Module, Normalize, int]]:
        """(model, normalize, crop_size) of each network, in order."""
        return list(zip(self.models, self.normalizes, self.crop_sizes, strict=True))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (N, 3, 256, 256) -> (members' mean of the ten-crop probs, first member's fc7)."""
        outs = [ten_crop_probs(m, images, norm, crop) for m, norm, crop in self.members()]
        return torch.stack([p for p, _ in outs]).mean(0), outs[0][1]

    def centre_probs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, 256, 256) -> the members' mean of the centre-crop softmax."""
        return torch.stack(
            [centre_crop_probs(m, images, norm, crop) for m, norm, crop in self.members()]
        ).mean(0)


def label_difference(labels: Sequence[str], reference: Sequence[str]) -> str | None:
    """How `labels` differs from `reference` (None: same labels in the same order)."""
    labels, reference = list(labels), list(reference)
    if labels == reference:
        return None
    if len(labels) != len(reference):
        return f"{len(labels)} classes instead of {len(reference)}"
    i = next(i for i, (a, b) in enumerate(zip(labels, reference, strict=True)) if a != b)
    order = " (the same classes in another order)" if sorted(labels) == sorted(reference) else ""
    return f"class {i} is {labels[i]!r} instead of {reference[i]!r}{order}"


def check_labels(ckpts: Sequence[dict], names: Sequence[str | Path]) -> None:
    """Refuse an ensemble whose members' labels differ from the first member's.

    Raises:
        ValueError: naming the first member that differs, and how.
    """
    for member, ckpt in zip(names[1:], ckpts[1:], strict=True):
        if how := label_difference(ckpt["labels"], ckpts[0]["labels"]):
            raise ValueError(
                f"{member} cannot join an ensemble with {names[0]}: its labels differ ({how}); "
                "every member must have the same labels in the same order"
            )


def checkpoint_paths(checkpoints: str | Path | Sequence[str | Path]) -> list[Path]:
    """One checkpoint path or several -> a list of paths."""
    if isinstance(checkpoints, (str, Path)):
        return [Path(checkpoints)]
    return [Path(p) for p in checkpoints]


def load_members(paths: Sequence[str | Path]) -> list[dict]:
    """Load the checkpoints of an ensemble (or of one network), checked by `check_labels`."""
    if not paths:
        raise ValueError("no checkpoint given")
    ckpts = [load_checkpoint(p) for p in paths]
    check_labels(ckpts, paths)
    return ckpts
