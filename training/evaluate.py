"""Top-1 / top-5 error with one centre crop or the paper's ten crops.

    alexnet evaluate runs/alexnet/best.pt --data data/synth            # val split
    alexnet evaluate best.pt --data /datasets/imagenet --split val --batch-size 256

Ten crops: the four corner patches and the centre patch of the 256x256 image and their
horizontal reflections; the prediction is the average of the ten softmax outputs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from training import distributed as dist
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.data import ImageFolder256, make_loader
from training.presets import CenterCrop, Normalize, TenCrop, normalize_from

log = logging.getLogger(__name__)


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


@torch.no_grad()
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
    centre = CenterCrop(crop_size)
    sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # loss, top-1 wrong, top-5 wrong, images, skipped
    bar = tqdm(loader, desc=desc, disable=not (progress and dist.is_main_process()), leave=False)
    for images, labels, skipped in bar:
        sums[4] += skipped
        if len(labels) == 0:
            continue
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if ten_crop:
                probs, _ = ten_crop_probs(model, images, normalize, crop_size)
            else:
                probs = F.softmax(model(centre(normalize(images))).float(), dim=1)
        k = min(5, probs.shape[1])
        top = probs.topk(k, dim=1).indices  # (N, k)
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
        "top5_err": wrong5 / n,
        "images": int(n),
        "skipped": int(skipped),
    }


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    *,
    split: str = "val",
    batch_size: int = 64,
    workers: int = 2,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Top-1/top-5 error of a checkpoint on `data/split`, with the centre crop and ten crops.

    Returns:
        {"single_crop": {...}, "ten_crop": {...}}, each with loss, top1_err, top5_err,
        images and skipped.
    """
    target = resolve_device(device)
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).to(target)
    normalize = normalize_from(ckpt["normalization"]).to(target)
    dataset = ImageFolder256(Path(data) / split, classes=list(ckpt["labels"]))
    loader = make_loader(dataset, batch_size=batch_size, workers=workers, shuffle=False)
    return {
        name: evaluate(model, loader, normalize, ckpt["crop_size"], device=target, ten_crop=ten,
                       amp=target.type == "cuda", progress=progress, desc=name)
        for name, ten in (("single_crop", False), ("ten_crop", True))
    }  # fmt: skip


def error_table(results: dict[str, dict[str, float]]) -> str:
    """`evaluate_checkpoint`'s figures as a small text table."""
    lines = [f"{'':12} {'top-1 err':>10} {'top-5 err':>10} {'images':>8}"]
    lines += [f"{name:12} {r['top1_err']:>10.2%} {r['top5_err']:>10.2%} {r['images']:>8}"
              for name, r in results.items()]  # fmt: skip
    if skipped := results["single_crop"]["skipped"]:
        lines.append(f"{skipped} unreadable file(s) skipped")
    return "\n".join(lines)
