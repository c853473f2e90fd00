"""`alexnet quantize NAME[:VERSION] --calibration DIR`: int8 (CPU) and fp16 (CUDA) files.

alexnet quantize synth --calibration data/synth/train

The int8 file is kept when the one-sided Wilson lower confidence bound of its top-1
agreement with fp32, measured on held-out images, reaches --min-agreement
(`training.quantize` explains why a bound and not the raw agreement).
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
        "store version, after measuring their agreement with fp32 on held-out images. A file "
        "the version already lists is checked against its manifest and skipped before any "
        "image is read.",
        epilog="Why a confidence bound: the top-1 agreement on n held-out images only estimates "
        "the agreement on all images; with 80 images, one disagreement (98.75%) happens more "
        "often than not to a file that agrees on 99% of images. So the int8 file is refused "
        "only when the one-sided Wilson lower bound of its agreement (at --confidence) is below "
        "--min-agreement. At the defaults (200 held-out images, 95% bound >= 95%) up to 4 "
        "disagreements pass; a file that never disagrees needs at least 52 held-out images.",
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
        "--images", type=int, default=400, help="images read from --calibration (default: 400)"
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
        default=0.95,
        help="refuse an int8 model unless the lower confidence bound of its top-1 agreement "
        "with fp32 reaches this; 0 keeps any that gives no NaN (default: 0.95)",
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="confidence of that one-sided Wilson score bound (default: 0.95)",
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
                        confidence=args.confidence,
                        precisions=tuple(args.precisions))  # fmt: skip
    for precision in args.precisions:
        if precision in manifest.files and precision not in before:
            details = manifest.files[precision].details
            print(
                f"added {C.MODEL_FILES[precision]} to {manifest.id}: top-1 agreement "
                f"{details['top1_agreement']:.1%} on {details['held_out_images']} held-out images "
                f"({details['confidence']:.0%} lower bound "
                f"{details['top1_agreement_lower_bound']:.1%}), top-5 overlap "
                f"{details['top5_overlap']:.1%}"
            )
    return manifest
