"""`alexnet synth OUT`: write a procedurally drawn, labelled image set.

alexnet synth data/synth --classes 10 --per-class 120 --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training import synth


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet synth",
        description="Write OUT/train/<class>/* and OUT/val/<class>/*: shapes and patterns with "
        "random colour, scale, rotation, position and clutter, in mixed sizes, JPEG and PNG.",
    )
    p.add_argument("out", type=Path, help="folder to create (must not hold an image set already)")
    p.add_argument(
        "--classes",
        type=int,
        default=10,
        help=f"number of classes, 2..{len(synth.CLASS_NAMES)} (default: 10)",
    )
    p.add_argument(
        "--per-class", type=int, default=100, help="images per class, train + val (default: 100)"
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of each class put in val/ (default: 0.2)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; the same seed gives the same files (default: 0)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(args: argparse.Namespace) -> dict:
    summary = synth.generate(
        args.out,
        classes=args.classes,
        per_class=args.per_class,
        seed=args.seed,
        val_fraction=args.val_fraction,
        progress=not args.no_progress,
    )
    print(
        f"wrote {summary['train']} training and {summary['val']} validation images "
        f"of {summary['classes']} classes to {summary['root']}"
    )
    return summary
