"""`alexnet filters CKPT_OR_MODEL`: the conv1 kernels as an image grid (the paper's Figure 3).

alexnet filters runs/synth-bn/best.pt                 # -> runs/synth-bn/filters.png
alexnet filters synth:1 --output synth-filters.png    # a store model (its model.onnx)
alexnet filters model_store/synth/1                   # a store version folder
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from alexnet.args import add_store_argument
from core import constants as C
from core import store
from training import pictures

log = logging.getLogger(__name__)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet filters",
        description="Draw the first convolutional layer's kernels, each min-max scaled to 0..255 "
        "and enlarged by nearest neighbour, in a grid read row by row in kernel order.",
    )
    p.add_argument(
        "source",
        help="a checkpoint file, a store version folder, or a store model NAME[:VERSION] "
        "(latest version when none is given)",
    )
    add_store_argument(p)
    p.add_argument(
        "-o", "--output", type=Path, default=None,
        help="PNG to write (default: filters.png beside a checkpoint, else "
        "filters-NAME-VERSION.png in the current folder)",
    )  # fmt: skip
    p.add_argument("--columns", type=int, default=16, help="kernels per row (default: 16)")
    p.add_argument("--scale", type=int, default=4, help="pixels per weight (default: 4)")
    p.add_argument("--pad", type=int, default=1, help="pixels between kernels (default: 1)")
    return p


def default_output(source: str, store_dir: Path) -> Path:
    path = Path(source)
    if path.is_file():
        return path.parent / C.PICTURE_FILES["filters"]
    folder = path if path.is_dir() else store.resolve(store_dir, source)
    manifest = store.read_manifest(folder)
    return Path(f"filters-{manifest.name}-{manifest.version}.png")


def main(args: argparse.Namespace) -> Path:
    weights, origin = pictures.load_conv1(args.source, args.store)
    output = args.output or default_output(args.source, args.store)
    pictures.save_filters(weights, output, columns=args.columns, scale=args.scale, pad=args.pad)
    count, _, kh, kw = weights.shape
    print(f"wrote {output}: {count} kernels of {kh}x{kw}x3 from {origin}")
    return output
