"""`alexnet prepare SRC DST`: the paper's 256x256 images, written once, in shards.

alexnet prepare data/synth data/synth-prepared
alexnet prepare /datasets/imagenet /fast/imagenet-256 --workers 16 --quality 90
alexnet train --data /fast/imagenet-256 ...        # reads the shards
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training.prepare import prepare


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet prepare",
        description="Decode every image of SRC once, bring it to 256x256 (shorter side to 256, "
        "central patch) and write DST/{train,val}/*.tar (WebDataset shards) with the labels, "
        "the counts, the mean image and the RGB PCA that training needs. SRC is "
        "SRC/{train,val}/<class>/* or ImageNet's ILSVRC2012 layout (train/<wnid>/*, a flat "
        "val/ and the devkit). An interrupted run continues where it stopped.",
    )
    p.add_argument("src", type=Path, help="the image set to read")
    p.add_argument("dst", type=Path, help="the folder to write (or to finish)")
    p.add_argument(
        "--encoding",
        default="jpeg",
        choices=["jpeg", "raw"],
        help="jpeg (about 20-30 KB an image) or raw uint8 (192 KiB; no decoding) (default: jpeg)",
    )
    p.add_argument("--quality", type=int, default=90, help="JPEG quality, 1-100 (default: 90)")
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (default: 1000)")
    p.add_argument(
        "--workers", type=int, default=None, help="processes (default: the number of CPUs)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="draws the order the training images are written in, so that every shard "
        "mixes the classes (default: 0)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(args: argparse.Namespace):
    prepared = prepare(args.src, args.dst, encoding=args.encoding, quality=args.quality,
                       shard_size=args.shard_size, workers=args.workers, seed=args.seed,
                       progress=not args.no_progress)  # fmt: skip
    for split, info in prepared.splits.items():
        print(
            f"{split}: {info.images} images in {len(info.shards)} shards"
            + (f", {len(info.skipped)} unreadable file(s) skipped" if info.skipped else "")
        )
    print(f"prepared {len(prepared.classes)} classes in {args.dst} ({prepared.encoding})")
    return prepared
