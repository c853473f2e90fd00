"""`alexnet export CKPT [CKPT ...] --name N`: checkpoint(s) -> a verified ONNX model in the store.

alexnet export runs/synth-bn/best.pt --name synth --data data/synth
alexnet export runs/a/best.pt runs/b/best.pt --name synth-2cnn --data data/synth  # ensemble
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alexnet.args import add_publish_arguments
from training.export import export_run


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet export",
        description="Export a checkpoint to model_store/NAME/VERSION/ (ONNX with the ten crops, "
        "softmax average and fc7 inside the graph, plus manifest.json), after verifying it "
        "against PyTorch. Several checkpoints (same labels, same order) make one ensemble "
        "graph: probs is the mean of the members' ten-crop softmax, fc7 the first member's.",
    )
    p.add_argument("checkpoints", type=Path, nargs="+", metavar="checkpoint",
                   help="checkpoint written by `alexnet train`; several: an ensemble")  # fmt: skip
    add_publish_arguments(p)
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="dataset root or prepared set: evaluate DATA/val with one and ten crops and "
        "record the figures (default: the checkpoint's last validation figures; none for an "
        "ensemble)",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="loader processes for --data (default: 2)"
    )
    return p


def main(args: argparse.Namespace) -> Path:
    folder = export_run(args.checkpoints, store_dir=args.store, name=args.name,
                        version=args.version, data=args.data, workers=args.workers)  # fmt: skip
    print(f"exported {args.name}:{folder.name} to {folder}")
    return folder
