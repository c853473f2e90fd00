"""`alexnet evaluate CKPT [CKPT ...]`: top-1 / top-5 error with the centre crop and ten crops.

alexnet evaluate runs/alexnet/best.pt --data data/synth            # val split
alexnet evaluate best.pt --data /datasets/imagenet --split val --batch-size 256
alexnet evaluate runs/a/best.pt runs/b/best.pt --data data/synth   # an ensemble
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.durable import write_json_atomic
from training.evaluate import error_table, evaluate_checkpoint


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet evaluate",
        description="Top-1/top-5 error of a checkpoint with the centre crop and with ten crops. "
        "Several checkpoints (same labels, same order) are evaluated as an ensemble: the "
        "average of their softmax outputs.",
    )
    p.add_argument("checkpoints", type=Path, nargs="+", metavar="checkpoint",
                   help="checkpoint written by `alexnet train`; several: an ensemble")  # fmt: skip
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="dataset root holding <split>/<class>/*, or a set written by `alexnet prepare`",
    )
    p.add_argument(
        "--split",
        default="val",
        help="sub-folder (or prepared split) of --data to evaluate (default: val)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default: 64)")
    p.add_argument("--workers", type=int, default=2, help="data loading processes (default: 2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results = evaluate_checkpoint(
        args.checkpoints, args.data, split=args.split, batch_size=args.batch_size,
        workers=args.workers, device=args.device, progress=not args.no_progress,
    )  # fmt: skip
    print(error_table(results))
    if args.json:
        write_json_atomic(args.json, results)
    return results
