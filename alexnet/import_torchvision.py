"""`alexnet import-torchvision --name NAME`: a store model from torchvision's ImageNet weights.

alexnet import-torchvision --name imagenet                       # downloads (online)
alexnet import-torchvision --name imagenet --weights-file alexnet-owt-7be5be79.pth
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alexnet.args import add_publish_arguments
from training.import_torchvision import WEIGHTS, import_torchvision


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet import-torchvision",
        description="Export torchvision's ImageNet AlexNet (IMAGENET1K_V1) to the model store, "
        "with the 1000 ImageNet labels and the normalization those weights expect.",
    )
    p.add_argument("--weights-file", type=Path, default=None,
                   help=f"a local copy of {Path(WEIGHTS.url).name} (default: download it through "
                   "torchvision's weights API)")  # fmt: skip
    add_publish_arguments(p)
    return p


def main(args: argparse.Namespace) -> Path:
    folder = import_torchvision(store_dir=args.store, name=args.name, version=args.version,
                                weights_file=args.weights_file)  # fmt: skip
    print(f"imported torchvision AlexNet ({WEIGHTS}) as {args.name}:{folder.name} in {folder}")
    return folder
