"""`alexnet quantize NAME[:VERSION] --calibration DIR`: int8 (CPU) and fp16 (CUDA) files.

alexnet quantize synth --calibration data/synth/train
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alexnet.args import add_store_argument
from core import constants as C
from core import store
from training.quantize import quantize


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet quantize",
        description="Add model.int8.onnx (static QDQ, for CPU) and model.fp16.onnx (for CUDA) to a "
        "store version, after measuring their agreement with fp32 on held-out images.",
    )
    p.add_argument("model", help="NAME or NAME:VERSION in the store (default version: the latest)")
    p.add_argument(
        "--calibration",
        type=Path,
        required=True,
        help="folder of representative images (searched recursively)",
    )
    add_store_argument(p)
    p.add_argument(
        "--images", type=int, default=160, help="images read from --calibration (default: 160)"
    )
    p.add_argument(
        "--held-out",
        type=float,
        default=0.5,
        help="share of them kept for measuring agreement (default: 0.5)",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=0.99,
        help="refuse an int8 model whose top-1 agreement with fp32 is lower (default: 0.99)",
    )
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["int8", "fp16"],
        choices=["int8", "fp16"],
        help="what to make (default: int8 fp16)",
    )
    return p


def main(args: argparse.Namespace) -> store.Manifest:
    before = set(store.read_manifest(store.resolve(args.store, args.model)).files)
    manifest = quantize(args.store, args.model, args.calibration, images=args.images,
                        held_out=args.held_out, min_agreement=args.min_agreement,
                        precisions=tuple(args.precisions))  # fmt: skip
    for precision in args.precisions:
        if precision in manifest.files and precision not in before:
            details = manifest.files[precision].details
            print(
                f"added {C.MODEL_FILES[precision]} to {manifest.id}: top-1 agreement "
                f"{details['top1_agreement']:.1%}, top-5 overlap {details['top5_overlap']:.1%}"
            )
    return manifest
