"""`alexnet plot RUN_DIR`: the training curves of a run as a PNG.

alexnet plot runs/synth-bn                  # -> runs/synth-bn/curves.png
alexnet plot runs/synth-bn/metrics.jsonl -o curves.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core import constants as C
from training import pictures


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet plot",
        description="Draw a run's metrics.jsonl as three panels: training and validation loss; "
        "training top-1, validation top-1 and top-5 error (%); learning rate (log scale).",
    )
    p.add_argument(
        "run", type=Path, help="run folder written by `alexnet train`, or its metrics.jsonl"
    )
    p.add_argument(
        "-o", "--output", type=Path, default=None,
        help="PNG to write (default: curves.png in the run folder)",
    )  # fmt: skip
    p.add_argument("--dpi", type=int, default=100, help="resolution (default: 100, 1200x360 px)")
    return p


def main(args: argparse.Namespace) -> Path:
    rows = pictures.read_metrics(args.run)
    run_dir = args.run if args.run.is_dir() else args.run.parent
    output = args.output or run_dir / C.PICTURE_FILES["curves"]
    pictures.save_curves(rows, output, dpi=args.dpi)
    print(f"wrote {output} ({len(rows)} epochs)")
    return output
