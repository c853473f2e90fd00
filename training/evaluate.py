"""Top-1 / top-5 error with one centre crop or the paper's ten crops.

With 5 classes or fewer there is no top-5 error (None): the five most probable classes are
all of them, and a flat 0 would say nothing.

    alexnet evaluate runs/alexnet/best.pt --data data/synth            # val split
    alexnet evaluate best.pt --data /datasets/imagenet --split val --batch-size 256
    alexnet evaluate runs/a/best.pt runs/b/best.pt --data data/synth   # an ensemble

Ten crops: the four corner patches and the centre patch of the 256x256 image and their
horizontal reflections; the prediction is the average of the ten softmax outputs. Several
checkpoints are evaluated as an ensemble: their softmax outputs are averaged (see
`training.ensemble`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from training import distributed as dist
from training import shards
from training.data import ImageFolder256, make_loader
from training.ensemble import (
    Ensemble,
    centre_crop_probs,
    checkpoint_paths,
    load_members,
    ten_crop_probs,
)
from training.presets import Normalize
from training.shard_loader import make_shard_loader

log = logging.getLogger(__name__)

TOP5 = 5  # the paper's second figure: is the true class among the five most probable?


def evaluate(
    model: nn.Module,
    loader,
    normalize: Normalize,
    crop_size: int,
    *,
    device: torch.device,
    ten_crop: bool = False,
    amp: bool = False,
    progress: bool = True,
    desc: str = "eval",
) -> dict[str, float]:
    """Loss, top-1 and top-5 error of `model` over `loader`, summed over all ranks.

    The loss is the cross-entropy of the (ten-crop averaged) softmax.
    """
    model.eval()

    def predict(images: torch.Tensor) -> torch.Tensor:
        if ten_crop:
            return ten_crop_probs(model, images, normalize, crop_size)[0]
        return centre_crop_probs(model, images, normalize, crop_size)

    return score(predict, loader, device=device, amp=amp, progress=progress, desc=desc)


@torch.no_grad()
def score(
    predict: Callable[[torch.Tensor], torch.Tensor],
    loader,
    *,
    device: torch.device,
    amp: bool = False,
    progress: bool = True,
    desc: str = "eval",
) -> dict[str, float]:
    """Loss, top-1 and top-5 error of the probabilities `predict` gives for `loader`'s images.

    Args:
        predict: uint8 (N, 3, 256, 256) on `device` -> probabilities (N, classes).
        loader: yields (images, labels, skipped files).
        device: where the images go.
        amp: run `predict` under bfloat16 autocast.
        progress, desc: the progress bar (main process only).
    """
    sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # loss, top-1 wrong, top-5 wrong, images, skipped
    classes = TOP5 + 1  # set by the first batch
    bar = tqdm(loader, desc=desc, disable=not (progress and dist.is_main_process()), leave=False)
    for images, labels, skipped in bar:
        sums[4] += skipped
        if len(labels) == 0:
            continue
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            probs = predict(images)
        classes = probs.shape[1]
        top = probs.topk(min(TOP5, classes), dim=1).indices  # (N, k)
        hit = top == labels[:, None]
        sums[0] += F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum").item()
        sums[1] += (~hit[:, 0]).sum().item()
        sums[2] += (~hit.any(1)).sum().item()
        sums[3] += len(labels)
    loss, wrong1, wrong5, n, skipped = dist.all_reduce_sum(sums, device)
    if n == 0:
        raise ValueError("no readable image to evaluate")
    return {
        "loss": loss / n,
        "top1_err": wrong1 / n,
        "top5_err": wrong5 / n if has_top5(classes) else None,
        "images": int(n),
        "skipped": int(skipped),
    }


def has_top5(num_classes: int) -> bool:
    """Whether a top-5 error says anything: with 5 classes or fewer the five most probable
    are every class, and the error is 0 whatever the model does (it is then None)."""
    return num_classes > TOP5


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def evaluate_checkpoint(
    checkpoints: str | Path | Sequence[str | Path],
    data: str | Path,
    *,
    split: str = "val",
    batch_size: int = 64,
    workers: int = 2,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Top-1/top-5 error of a checkpoint on `data/split`, with the centre crop and ten crops.

    Args:
        checkpoints: one checkpoint, or several evaluated as an ensemble (the average of
            their softmax outputs; they must have the same labels in the same order).
        data, split: the images are `data/split/<class>/*`, or the split of a set
            written by `alexnet prepare`.
        batch_size, workers: the loader.
        device: auto, cpu, cuda or cuda:N.
        progress: show progress bars.

    Returns:
        {"single_crop": {...}, "ten_crop": {...}}, each with loss, top1_err, top5_err (None
        with 5 classes or fewer: `has_top5`), images and skipped.
    """
    target = resolve_device(device)
    ckpts = load_members(checkpoint_paths(checkpoints))
    ensemble = Ensemble.from_checkpoints(ckpts).to(target)
    loader = split_loader(data, split, list(ckpts[0]["labels"]), batch_size=batch_size,
                          workers=workers, device=target)  # fmt: skip
    protocols = {"single_crop": ensemble.centre_probs, "ten_crop": lambda x: ensemble(x)[0]}
    return {
        name: score(predict, loader, device=target, amp=target.type == "cuda",
                    progress=progress, desc=name)
        for name, predict in protocols.items()
    }  # fmt: skip


def split_loader(data: str | Path, split: str, labels: list[str], *, batch_size: int,
                 workers: int, device: torch.device):  # fmt: skip
    """Every image of one split, once, in order: from class folders or a prepared set."""
    if shards.is_prepared(data):
        prepared = shards.read_prepared(data)
        if split not in prepared.splits:
            raise ValueError(f"{data} has no split {split!r} (it has {', '.join(prepared.splits)})")
        if prepared.classes != labels:
            raise ValueError(f"{data} holds other classes than the checkpoint's labels")
        return make_shard_loader(data, split, prepared, batch_size=batch_size,
                                 workers=workers, shuffle=False, device=device)  # fmt: skip
    dataset = ImageFolder256(Path(data) / split, classes=labels)
    return make_loader(dataset, batch_size=batch_size, workers=workers, shuffle=False)


def error_table(results: dict[str, dict[str, float]]) -> str:
    """`evaluate_checkpoint`'s figures as a small text table. Without a top-5 error (5 classes
    or fewer: `has_top5`) it has no top-5 column, and says why."""
    top5 = all(r["top5_err"] is not None for r in results.values())
    head = f"{'':12} {'top-1 err':>10} " + (f"{'top-5 err':>10} " if top5 else "")
    lines = [head + f"{'images':>8}"]
    for name, r in results.items():
        top5_cell = f"{r['top5_err']:>10.2%} " if top5 else ""
        lines.append(f"{name:12} {r['top1_err']:>10.2%} {top5_cell}{r['images']:>8}")
    if not top5:
        lines.append(f"no top-5 error: with {TOP5} classes or fewer the five most probable are "
                     "all of them")  # fmt: skip
    if skipped := results["single_crop"]["skipped"]:
        lines.append(f"{skipped} unreadable file(s) skipped")
    return "\n".join(lines)
