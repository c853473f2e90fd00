"""Train AlexNet as the 2012 paper did, on CPU, one GPU, or many GPUs.

    # one process (CUDA if present, else CPU)
    alexnet train --data data/synth --output runs/synth-bn --arch bn --epochs 30

    # several GPUs on one machine: DDP, one process per GPU; --batch-size stays global
    torchrun --standalone --nproc_per_node=4 -m alexnet train --data /datasets/imagenet \\
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

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from core import constants as C
from core.durable import write_lines_atomic
from training import distributed as dist
from training import shards
from training.checkpoint import link_atomic, load_checkpoint, save_atomic
from training.data import ImageFolder256, make_loader, pixel_statistics
from training.evaluate import evaluate, resolve_device
from training.model import DEFAULT_INIT, build_model
from training.presets import Normalize, PCALighting, TrainAugment
from training.shard_loader import ShardLoader, ShardStream, make_shard_loader, read_statistics

log = logging.getLogger("training")


@dataclass
class TrainConfig:
    """What `train` does; `alexnet train` fills it from its options (same names), and every
    checkpoint stores it (`config`)."""

    data: Path  # root holding train/<class>/* and val/<class>/*, or a prepared set
    output: Path = Path("runs/alexnet")  # run folder for checkpoints and metrics
    arch: str = "paper"  # network variant (training.model.VARIANTS)
    init: str | None = None  # weight initialization (None: the variant's DEFAULT_INIT)
    epochs: int = C.EPOCHS
    batch_size: int = C.BATCH_SIZE  # global, split across processes
    lr: float = C.LEARNING_RATE
    momentum: float = C.MOMENTUM
    weight_decay: float = C.WEIGHT_DECAY
    optimizer: str = "sgd"  # sgd (the paper's) or adamw
    schedule: str = "plateau"  # plateau (the paper's) or cosine (warmup, then cosine to 0)
    warmup_epochs: float = 0.0  # cosine: linear warmup from 0 over this many epochs
    label_smoothing: float = 0.0  # cross-entropy target smoothing (the paper: none)
    lr_factor: float = C.LR_FACTOR  # multiply the lr by this when val top-1 error plateaus
    lr_patience: int = 3  # epochs without improvement before the lr drops
    min_lr: float = 1e-5  # three drops from 0.01
    dropout: float = C.DROPOUT
    pca_std: float = C.PCA_ALPHA_STD  # 0 disables the PCA colour noise
    stats_images: int = 10_000  # images for the mean image and RGB PCA (0: all)
    workers: int | None = None  # loader processes per process (None: min(8, CPUs - 1))
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with bf16 in hardware (fast_bf16)
    channels_last: bool = True  # channels_last memory format
    seed: int = 0  # shuffling, augmentation and dropout
    resume: Path | None = None  # checkpoint to continue from
    save_every: int = 0  # also keep epoch_<N>.pt every N epochs (0: never)
    no_progress: bool = False  # hide progress bars


# torch.cpu.get_capabilities() names of bf16 in hardware: x86's AMX and AVX512-BF16, Arm's BF16
CPU_BF16_FEATURES = ("amx_bf16", "avx512_bf16", "bf16")


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up on `device`: on CUDA, and on CPUs with bf16
    in hardware (AMX or AVX512-BF16 on x86, BF16 on Arm). Elsewhere oneDNN emulates bf16,
    slower than fp32, so training stays in fp32."""
    if device.type == "cuda":
        return True
    caps = torch.cpu.get_capabilities()
    return device.type == "cpu" and any(caps.get(k) for k in CPU_BF16_FEATURES)


OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("plateau", "cosine")


def make_optimizer(args: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The paper's SGD with momentum, or AdamW (decoupled weight decay, no decay on biases
    and batch-norm parameters, as is usual for it)."""
    if args.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
        )
    if args.optimizer == "adamw":
        decay = [p for p in model.parameters() if p.dim() > 1]
        no_decay = [p for p in model.parameters() if p.dim() <= 1]
        groups = [{"params": decay, "weight_decay": args.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]  # fmt: skip
        return torch.optim.AdamW(groups, lr=args.lr)
    raise ValueError(
        f"Invalid optimizer {args.optimizer!r}. Only {', '.join(OPTIMIZERS)} are supported."
    )


def make_scheduler(
    args: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """plateau: the paper's rule (divide the lr when val top-1 error stops improving), stepped
    once an epoch. cosine: a linear warmup over `warmup_epochs`, then a cosine from the lr to 0
    at the end of the last epoch, stepped after every batch; it fixes the whole schedule in
    advance, so a short run ends at a small lr instead of waiting for a plateau."""
    if args.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min",
            factor=args.lr_factor, patience=args.lr_patience, min_lr=args.min_lr)  # fmt: skip
    if args.schedule == "cosine":
        total = max(1, args.epochs * steps_per_epoch)
        warmup = min(total - 1, round(args.warmup_epochs * steps_per_epoch))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    raise ValueError(
        f"Invalid schedule {args.schedule!r}. Only {', '.join(SCHEDULES)} are supported."
    )


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
    label_smoothing: float = 0.0,
    step_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, float]:
    """One pass over the training set; returns loss, top-1 error, images/s and files skipped.

    `step_scheduler`, when given, is stepped after every optimizer step (a per-step schedule).
    """
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
            images = torch.zeros(1, 3, C.IMAGE_SIZE, C.IMAGE_SIZE, dtype=torch.uint8, device=device)
        x = augment(images, generator)  # (B, 3, c, c), normalized
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = (
            F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
            if len(labels)
            else logits.sum() * 0
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step_scheduler is not None:
            step_scheduler.step()
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


def load_data(args: TrainConfig, rank: int, world_size: int, device: torch.device):
    if shards.is_prepared(args.data):
        return load_prepared(args, rank, world_size, device)
    train_set = ImageFolder256(args.data / "train")
    val_set = ImageFolder256(args.data / "val", classes=train_set.classes)
    _check_batch_size(args, world_size)
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


def load_prepared(args: TrainConfig, rank: int, world_size: int, device: torch.device):
    """`load_data` for a prepared set (`training.shards`): each rank reads its own shards."""
    _check_batch_size(args, world_size)
    prepared = shards.read_prepared(args.data)
    per_rank = args.batch_size // world_size
    common = dict(batch_size=per_rank, workers=args.workers, device=device, seed=args.seed,
                  rank=rank, world_size=world_size)  # fmt: skip
    train_loader = make_shard_loader(args.data, "train", prepared, shuffle=True, **common)
    val_loader = make_shard_loader(args.data, "val", prepared, shuffle=False, **common)
    steps, train_split = len(train_loader), prepared.splits["train"]
    if steps == 0:
        raise ValueError(
            f"{args.data}: {train_split.images} training image(s) in "
            f"{len(train_split.shards)} shard(s) give no whole batch of {per_rank} "
            f"to each of {world_size} process(es); use fewer processes, a smaller --batch-size, "
            "or more shards"
        )
    readers = sum(1 for plan in train_loader.dataset.plan() if plan.shards)
    log.info("prepared set %s (%s, %s): %d batches of %d per process per epoch, read by %d "
             "worker(s) per process; %d training image(s) left out of each epoch", args.data,
             prepared.encoding, shards.dump(prepared), steps, per_rank, readers,
             train_split.images - steps * per_rank * world_size)  # fmt: skip
    return train_loader.dataset, val_loader.dataset, train_loader, val_loader


def _check_batch_size(args: TrainConfig, world_size: int) -> None:
    if args.batch_size % world_size:
        raise ValueError(
            f"--batch-size {args.batch_size} is not divisible by {world_size} processes"
        )


def set_epoch(loader, epoch: int) -> None:
    """Reshuffle for `epoch`: a `ShardLoader`, or the folder loader's DistributedSampler."""
    (loader if isinstance(loader, ShardLoader) else loader.sampler).set_epoch(epoch)


def compute_statistics(args: TrainConfig, train_set: ImageFolder256) -> dict:
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


def prepared_statistics(args: TrainConfig) -> dict:
    """A prepared set's mean image and RGB PCA, written by `alexnet prepare` (stats.npz)."""
    log.info("mean image and RGB PCA from %s (--stats-images does not apply)",
             args.data / shards.STATS_FILE)  # fmt: skip
    return read_statistics(args.data)


def train(config: TrainConfig) -> dict:
    """Train; returns the last checkpoint's metrics history.

    Raises:
        FileExistsError: the output folder holds a run and `resume` is not given.
        ValueError: the data or the options cannot be used (the message says why).
    """
    args = replace(config)  # filled in below (workers, arch, init), then stored as given
    device = resolve_device(args.device)
    local_rank = dist.init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.backends.cudnn.benchmark = True
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if args.workers is None:
        args.workers = max(0, min(8, (torch.multiprocessing.cpu_count() // max(1, world_size)) - 1))
    amp = args.amp and fast_bf16(device)
    channels_last = args.channels_last  # faster on CPU too (oneDNN), in fp32 and in bf16
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
        prepared = isinstance(train_set, ShardStream)
        stats = prepared_statistics(args) if prepared else compute_statistics(args, train_set)
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

    optimizer = make_optimizer(args, model)
    scheduler = make_scheduler(args, optimizer, steps_per_epoch=len(train_loader))
    per_step = args.schedule != "plateau"
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
    config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()}
    for epoch in range(start_epoch, args.epochs):
        set_epoch(train_loader, epoch)
        generator = seed_epoch(args.seed, epoch, rank, device)
        t0 = time.perf_counter()
        epoch_train = train_one_epoch(
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
            label_smoothing=args.label_smoothing,
            step_scheduler=scheduler if per_step else None,
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
        lr = optimizer.param_groups[0]["lr"]  # at the epoch's end (per-step schedules move)
        if not per_step:
            scheduler.step(val["top1_err"])
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": epoch_train["loss"],
            "train_top1_err": epoch_train["top1_err"],
            "val_loss": val["loss"],
            "val_top1_err": val["top1_err"],
            "val_top5_err": val["top5_err"],
            "images_per_s": epoch_train["images_per_s"],
            "epoch_s": time.perf_counter() - t0,
            "skipped_files": epoch_train["skipped"] + val["skipped"],
        }
        history.append(row)
        improved = val["top1_err"] < best
        best = min(best, val["top1_err"])
        top5 = row["val_top5_err"]  # None with 5 classes or fewer (training.evaluate.has_top5)
        log.info(
            "epoch %d: loss %.4f  val top-1 err %.2f%%%s  lr %.2g  %.0f img/s%s",
            epoch,
            row["train_loss"],
            100 * row["val_top1_err"],
            "" if top5 is None else f"  top-5 err {100 * top5:.2f}%",
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
            # rewritten from the checkpoint's history, so the two always agree
            write_lines_atomic(args.output / C.METRICS_FILE, history)
        dist.barrier()
    if dist.is_distributed():
        digest = dist.check_replicas_agree(model)
        log.info("all %d ranks hold identical weights (sha256 %s)", world_size, digest[:16])
    dist.cleanup()
    return {"metrics": history}


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
