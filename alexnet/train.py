"""`alexnet train`: train AlexNet on a class-per-folder image set (`training.train.train`).

    alexnet train --data data/synth --output runs/synth-bn --arch bn --epochs 30

    # several GPUs on one machine: DDP, one process per GPU; --batch-size stays global
    torchrun --standalone --nproc_per_node=4 -m alexnet train --data /datasets/imagenet \\
        --output runs/imagenet-paper --arch paper --workers 8

    # continue exactly where a run stopped
    alexnet train --data data/synth --output runs/synth-bn --resume runs/synth-bn/checkpoint.pt
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from training.model import INITS, VARIANTS
from training.recipes import RECIPES, recipe
from training.train import OPTIMIZERS, SCHEDULES, train
from training.train import TrainConfig as D

Q = RECIPES["quickstart"]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet train",
        description="Train AlexNet on a class-per-folder image set (DATA/train, DATA/val) or "
        "on a set prepared by `alexnet prepare`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Multi-GPU: torchrun --standalone --nproc_per_node=N -m alexnet train ARGS",
    )
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="root holding train/<class>/* and val/<class>/*, or a set written by "
        "`alexnet prepare` (its shards, labels and statistics are used)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=D.output,
        help="run folder for checkpoints and metrics (default: runs/alexnet)",
    )
    p.add_argument(
        "--arch", default=D.arch, choices=list(VARIANTS), help="network variant (default: paper)"
    )
    p.add_argument(
        "--init",
        default=D.init,
        choices=list(INITS),
        help="weight initialization: the paper's; Caffe's (biases 0.1, fc6/fc7 std 0.005), "
        "which trains where the paper's stalls; or he (He-normal convolutions, Caffe's FC "
        "layers) for batch norm (default: paper for paper and paper-ungrouped, caffe for "
        "torchvision, he for bn)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=D.epochs,
        help=f"epochs to train (default: {D.epochs}, as the paper)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"global batch size, split across processes (default: {D.batch_size})",
    )
    p.add_argument(
        "--recipe",
        default="paper",
        choices=list(RECIPES),
        help="a named set of the optimisation options below: paper (section 5 of the paper) "
        "or quickstart (the built-in default's, for short CPU runs: "
        + " ".join(
            f"--{k.replace('_', '-')} {v:g}"
            if isinstance(v, float)
            else f"--{k.replace('_', '-')} {v}"
            for k, v in Q.items()
        )
        + "); an option given as well wins (default: paper)",
    )
    # the recipe's options default to None: the recipe's value, else TrainConfig's (config_from)
    p.add_argument(
        "--optimizer",
        default=None,
        choices=list(OPTIMIZERS),
        help=f"sgd (with momentum, the paper's) or adamw (default: {D.optimizer})",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"initial (plateau) or peak (cosine) learning rate (default: {D.lr})",
    )
    p.add_argument(
        "--schedule",
        default=None,
        choices=list(SCHEDULES),
        help="plateau: divide the lr by --lr-factor when the val error stops improving (the "
        "paper); cosine: linear warmup over --warmup-epochs, then a cosine to 0 at the last "
        f"batch (default: {D.schedule})",
    )
    p.add_argument(
        "--warmup-epochs",
        type=float,
        default=None,
        help=f"cosine schedule: epochs of linear lr warmup (default: {D.warmup_epochs:g})",
    )
    p.add_argument(
        "--label-smoothing",
        type=float,
        default=None,
        help=f"cross-entropy label smoothing (default: {D.label_smoothing:g}, as the paper)",
    )
    p.add_argument(
        "--momentum", type=float, default=D.momentum, help=f"SGD momentum (default: {D.momentum})"
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help=f"weight decay (default: {D.weight_decay})",
    )
    p.add_argument(
        "--lr-factor",
        type=float,
        default=D.lr_factor,
        help=f"multiply the lr by this when val top-1 error plateaus (default: {D.lr_factor})",
    )
    p.add_argument(
        "--lr-patience",
        type=int,
        default=D.lr_patience,
        help="epochs without improvement before the lr drops (default: 3)",
    )
    p.add_argument(
        "--min-lr",
        type=float,
        default=D.min_lr,
        help="the lr never drops below this (default: 1e-5, three drops from 0.01)",
    )
    p.add_argument(
        "--dropout",
        type=float,
        default=None,
        help=f"dropout before fc6 and fc7 (default: {D.dropout})",
    )
    p.add_argument(
        "--pca-std",
        type=float,
        default=D.pca_std,
        help=f"std of the PCA colour noise, 0 to disable (default: {D.pca_std})",
    )
    p.add_argument(
        "--stats-images",
        type=int,
        default=D.stats_images,
        help="training images used for the mean image and RGB PCA (default: 10000; 0 = all; "
        "a prepared set brings its own, of every training image)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=D.workers,
        help="data loading processes per GPU/process (default: min(8, CPUs - 1))",
    )
    p.add_argument(
        "--device", default=D.device, help="auto, cpu, cuda (default: auto = CUDA when present)"
    )
    p.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=D.amp,
        help="bf16 autocast on CUDA and on CPUs with bf16 in hardware (AMX or AVX512-BF16 "
        "on x86, BF16 on Arm; about 2x faster there); elsewhere fp32 (default: on)",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=D.channels_last,
        help="channels_last memory format (default: on; faster on CUDA and CPU)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=D.seed,
        help="seed for shuffling, augmentation and dropout (default: 0)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=D.resume,
        help="checkpoint to continue from (model, optimizer, scheduler, epoch, RNG)",
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=D.save_every,
        help="also keep epoch_<N>.pt every N epochs (default: 0 = only checkpoint.pt and best.pt)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


# options whose None means "the recipe's value, else TrainConfig's default"
DEFAULTED = (
    "optimizer",
    "lr",
    "schedule",
    "warmup_epochs",
    "label_smoothing",
    "weight_decay",
    "batch_size",
    "dropout",
)


def config_from(args: argparse.Namespace) -> D:
    """The TrainConfig of parsed options (every option is a field of the same name); an
    option of the recipe left unset takes the recipe's value, else TrainConfig's default."""
    values = {f.name: getattr(args, f.name) for f in fields(D)}
    chosen = recipe(args.recipe)
    for name in DEFAULTED:
        if values[name] is None:
            values[name] = chosen.get(name, getattr(D, name))
    return D(**values)


def main(args: argparse.Namespace) -> dict:
    return train(config_from(args))
