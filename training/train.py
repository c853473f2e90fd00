"""Train AlexNet as the 2012 paper did, on CPU, one GPU, or many GPUs.

    # one process (CUDA if present, else CPU)
    alexnet train --data data/synth --output runs/synth-bn --arch bn --epochs 30

    # several GPUs on one machine: DDP, one process per GPU; --batch-size stays global
    torchrun --standalone --nproc_per_node=4 -m training.train --data /datasets/imagenet \\
        --output runs/imagenet-paper --arch paper --workers 8

    # continue exactly where a run stopped
    alexnet train --data data/synth --output runs/synth-bn --resume runs/synth-bn/checkpoint.pt

The recipe (paper, section 5): SGD with momentum 0.9, weight decay 5e-4, batch 128,
learning rate 0.01 divided by 10 whenever the validation error stops improving; inputs
are random crops of the 256x256 images, mirrored at random, with PCA colour noise, after
subtracting the training set's mean image. Every epoch writes `checkpoint.pt` (atomically),
`best.pt` when the validation top-1 error improved, and `metrics.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from core import constants as C
from training import distributed as dist
from training.checkpoint import link_atomic, load_checkpoint, save_atomic
from training.data import ImageFolder256, make_loader, pixel_statistics
from training.evaluate import evaluate, resolve_device
from training.model import DEFAULT_INIT, INITS, VARIANTS, build_model
from training.presets import Normalize, PCALighting, TrainAugment

log = logging.getLogger("training")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet train",
        description="Train AlexNet on a class-per-folder image set (DATA/train, DATA/val).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Multi-GPU: torchrun --standalone --nproc_per_node=N -m training.train ARGS",
    )
    p.add_argument(
        "--data", type=Path, required=True, help="root holding train/<class>/* and val/<class>/*"
    )
    p.add_argument(
        "--output",
        type=Path,
        default=Path("runs/alexnet"),
        help="run folder for checkpoints and metrics (default: runs/alexnet)",
    )
    p.add_argument(
        "--arch", default="paper", choices=list(VARIANTS), help="network variant (default: paper)"
    )
    p.add_argument(
        "--init",
        default=None,
        choices=list(INITS),
        help="weight initialization: the paper's; Caffe's (biases 0.1, fc6/fc7 std 0.005), "
        "which trains where the paper's stalls; or he (He-normal convolutions, Caffe's FC "
        "layers) for batch norm (default: paper for paper and paper-ungrouped, caffe for "
        "torchvision, he for bn)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=C.EPOCHS,
        help=f"epochs to train (default: {C.EPOCHS}, as the paper)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=C.BATCH_SIZE,
        help=f"global batch size, split across processes (default: {C.BATCH_SIZE})",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=C.LEARNING_RATE,
        help=f"initial learning rate (default: {C.LEARNING_RATE})",
    )
    p.add_argument(
        "--momentum", type=float, default=C.MOMENTUM, help=f"SGD momentum (default: {C.MOMENTUM})"
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=C.WEIGHT_DECAY,
        help=f"weight decay (default: {C.WEIGHT_DECAY})",
    )
    p.add_argument(
        "--lr-factor",
        type=float,
        default=C.LR_FACTOR,
        help=f"multiply the lr by this when val top-1 error plateaus (default: {C.LR_FACTOR})",
    )
    p.add_argument(
        "--lr-patience",
        type=int,
        default=3,
        help="epochs without improvement before the lr drops (default: 3)",
    )
    p.add_argument(
        "--min-lr",
        type=float,
        default=1e-5,
        help="the lr never drops below this (default: 1e-5, three drops from 0.01)",
    )
    p.add_argument(
        "--dropout",
        type=float,
        default=C.DROPOUT,
        help=f"dropout before fc6 and fc7 (default: {C.DROPOUT})",
    )
    p.add_argument(
        "--pca-std",
        type=float,
        default=C.PCA_ALPHA_STD,
        help=f"std of the PCA colour noise, 0 to disable (default: {C.PCA_ALPHA_STD})",
    )
    p.add_argument(
        "--stats-images",
        type=int,
        default=10000,
        help="training images used for the mean image and RGB PCA (default: 10000; 0 = all)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data loading processes per GPU/process (default: min(8, CPUs - 1))",
    )
    p.add_argument(
        "--device", default="auto", help="auto, cpu, cuda (default: auto = CUDA when present)"
    )
    p.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bf16 autocast on CUDA (default: on; ignored on CPU)",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels_last memory format on CUDA (default: on)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for shuffling, augmentation and dropout (default: 0)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="checkpoint to continue from (model, optimizer, scheduler, epoch, RNG)",
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=0,
        help="also keep epoch_<N>.pt every N epochs (default: 0 = only checkpoint.pt and best.pt)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def seed_epoch(seed: int, epoch: int, rank: int, device: torch.device) -> torch.Generator:
    """Seed everything from (seed, epoch, rank): a resumed run repeats an uninterrupted one."""
    s = (seed * 1_000_003 + epoch * 1_009 + rank) % 2**63
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)  # dropout (and CUDA's generators)
    generator = torch.Generator(device=device)
    generator.manual_seed(s)
    return generator


def train_one_epoch(
    model: nn.Module,
    loader,
    augment: TrainAugment,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    generator: torch.Generator,
    amp: bool,
    channels_last: bool,
    epoch: int,
    progress: bool,
) -> dict[str, float]:
    """One pass over the training set; returns loss, top-1 error, images/s and files skipped."""
    model.train()
    sums = [0.0, 0.0, 0.0, 0.0]  # loss, top-1 wrong, images, skipped
    start = time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {epoch}",
        unit="batch",
        disable=not (progress and dist.is_main_process()),
    )
    for images, labels, skipped in bar:
        sums[3] += skipped
        if len(labels) == 0 and not dist.is_distributed():
            continue  # every file of this batch was unreadable
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if len(labels) == 0:
            # Under DDP every rank must join each gradient all-reduce, or the others hang:
            # take a step whose loss is zero on one blank image.
            images = torch.zeros(1, 3, 256, 256, dtype=torch.uint8, device=device)
        x = augment(images, generator)  # (B, 3, c, c), normalized
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels) if len(labels) else logits.sum() * 0
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums[0] += loss.item() * len(labels)
        sums[1] += (logits.argmax(1) != labels).sum().item()
        sums[2] += len(labels)
        elapsed = time.perf_counter() - start
        bar.set_postfix(
            loss=f"{sums[0] / max(1, sums[2]):.3f}",
            img_s=f"{sums[2] * dist.get_world_size() / elapsed:.0f}",
        )
    elapsed = time.perf_counter() - start
    loss, wrong, n, skipped = dist.all_reduce_sum(sums, device)
    if n == 0:
        raise ValueError("no readable training image in this epoch")
    return {
        "loss": loss / n,
        "top1_err": wrong / n,
        "images_per_s": n / elapsed,
        "skipped": int(skipped),
    }


def load_data(args: argparse.Namespace, rank: int, world_size: int, device: torch.device):
    train_set = ImageFolder256(args.data / "train")
    val_set = ImageFolder256(args.data / "val", classes=train_set.classes)
    if args.batch_size % world_size:
        raise ValueError(
            f"--batch-size {args.batch_size} is not divisible by {world_size} processes"
        )
    common = dict(
        workers=args.workers,
        seed=args.seed,
        rank=rank,
        world_size=world_size,
        pin_memory=device.type == "cuda",
    )
    per_rank = args.batch_size // world_size
    train_loader = make_loader(
        train_set,
        batch_size=per_rank,
        shuffle=True,
        drop_last=len(train_set) >= args.batch_size,
        **common,
    )
    val_loader = make_loader(val_set, batch_size=per_rank, shuffle=False, **common)
    return train_set, val_set, train_loader, val_loader


def compute_statistics(args: argparse.Namespace, train_set: ImageFolder256) -> dict:
    """Mean image and RGB PCA on rank 0, shared with the other ranks."""
    stats = None
    if dist.is_main_process():
        log.info("computing the mean image and RGB PCA of %s", train_set.root)
        stats = pixel_statistics(
            train_set,
            max_images=args.stats_images or None,
            workers=args.workers,
            seed=args.seed,
            progress=not args.no_progress,
        )
    return dist.broadcast_object(stats)


def main(args: argparse.Namespace) -> dict:
    """Train; returns the last checkpoint's metrics history."""
    device = resolve_device(args.device)
    local_rank = dist.init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.backends.cudnn.benchmark = True
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if args.workers is None:
        args.workers = max(0, min(8, (torch.multiprocessing.cpu_count() // max(1, world_size)) - 1))
    amp = args.amp and device.type == "cuda"
    channels_last = args.channels_last and device.type == "cuda"
    last_path = args.output / C.CHECKPOINT_LAST
    if args.resume is None and last_path.exists():
        raise FileExistsError(
            f"{last_path} exists: pass --resume {last_path} to continue that run, "
            "or choose another --output"
        )

    train_set, val_set, train_loader, val_loader = load_data(args, rank, world_size, device)
    ckpt = load_checkpoint(args.resume) if args.resume else None
    if ckpt is not None:
        if ckpt["labels"] != train_set.classes:
            raise ValueError(
                f"{args.resume} was trained on other classes than {args.data / 'train'}"
            )
        args.arch = ckpt["arch"]
        normalization, pca = ckpt["normalization"], ckpt["pca"]
    else:
        stats = compute_statistics(args, train_set)
        normalization = {"mean": stats["mean"], "std": None, "kind": "mean_image"}
        pca = {"eigval": stats["eigval"], "eigvec": stats["eigvec"], "images": stats["images"]}

    args.init = args.init or DEFAULT_INIT[args.arch]
    torch.manual_seed(args.seed)  # the initial weights
    model = build_model(args.arch, len(train_set.classes), init=args.init, dropout=args.dropout)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    crop_size = model.crop_size
    normalize = Normalize(normalization["mean"], normalization.get("std")).to(device)
    lighting = PCALighting(pca["eigval"], pca["eigvec"], normalization.get("std"), args.pca_std).to(
        device
    )
    augment = TrainAugment(normalize, crop_size, lighting if args.pca_std > 0 else None)
    ddp_model = (
        DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
        if dist.is_distributed()
        else model
    )

    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=args.lr_factor, patience=args.lr_patience, min_lr=args.min_lr
    )
    start_epoch, history, best = 0, [], float("inf")
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, history = ckpt["epoch"] + 1, list(ckpt["metrics"])
        best = min((m["val_top1_err"] for m in history), default=float("inf"))
        _restore_rng(ckpt.get("rng"))
        log.info("resumed from %s at epoch %d", args.resume, start_epoch)

    log.info(
        "arch=%s init=%s classes=%d train=%d val=%d device=%s processes=%d amp=%s batch=%d",
        args.arch,
        args.init,
        len(train_set.classes),
        len(train_set),
        len(val_set),
        device,
        world_size,
        amp,
        args.batch_size,
    )
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"}
    for epoch in range(start_epoch, args.epochs):
        train_loader.sampler.set_epoch(epoch)
        generator = seed_epoch(args.seed, epoch, rank, device)
        t0 = time.perf_counter()
        train = train_one_epoch(
            ddp_model,
            train_loader,
            augment,
            optimizer,
            device=device,
            generator=generator,
            amp=amp,
            channels_last=channels_last,
            epoch=epoch,
            progress=not args.no_progress,
        )
        val = evaluate(
            model,
            val_loader,
            normalize,
            crop_size,
            device=device,
            amp=amp,
            progress=not args.no_progress,
        )
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step(val["top1_err"])
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train["loss"],
            "train_top1_err": train["top1_err"],
            "val_loss": val["loss"],
            "val_top1_err": val["top1_err"],
            "val_top5_err": val["top5_err"],
            "images_per_s": train["images_per_s"],
            "epoch_s": time.perf_counter() - t0,
            "skipped_files": train["skipped"] + val["skipped"],
        }
        history.append(row)
        improved = val["top1_err"] < best
        best = min(best, val["top1_err"])
        log.info(
            "epoch %d: loss %.4f  val top-1 err %.2f%%  top-5 err %.2f%%  lr %.2g  %.0f img/s%s",
            epoch,
            row["train_loss"],
            100 * row["val_top1_err"],
            100 * row["val_top5_err"],
            lr,
            row["images_per_s"],
            "  (best)" if improved else "",
        )
        if row["skipped_files"]:
            log.warning("epoch %d skipped %d unreadable file(s)", epoch, row["skipped_files"])
        if dist.is_main_process():
            state = {
                "model": model.state_dict(),
                "arch": args.arch,
                "num_classes": len(train_set.classes),
                "labels": train_set.classes,
                "crop_size": crop_size,
                "normalization": normalization,
                "pca": pca,
                "epoch": epoch,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "metrics": history,
                "config": config,
                "rng": _rng_state(),
            }
            save_atomic(state, last_path)
            if improved:
                link_atomic(last_path, args.output / C.CHECKPOINT_BEST)
            if args.save_every and (epoch + 1) % args.save_every == 0:
                link_atomic(last_path, args.output / f"epoch_{epoch + 1:03d}.pt")
            _write_metrics(history, args.output / C.METRICS_FILE)
        dist.barrier()
    if dist.is_distributed():
        digest = dist.check_replicas_agree(model)
        log.info("all %d ranks hold identical weights (sha256 %s)", world_size, digest[:16])
    dist.cleanup()
    return {"metrics": history}


def _write_metrics(history: list[dict], path: Path) -> None:
    """Rewrite the JSONL file from the checkpoint's history, so the two always agree."""
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in history))
    tmp.replace(path)


def _rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict | None) -> None:
    if not state:
        return
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


if __name__ == "__main__":  # torchrun -m training.train ...
    from training.cli import setup_logging

    setup_logging()
    main(get_args_parser().parse_args(sys.argv[1:]))
