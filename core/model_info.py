"""What a store model knows, in words for people: the log of `alexnet quickstart`, the
page's header and `GET /models` all say it the same way.

    knows(manifest)      "1000 ImageNet classes" or "6 classes: checkerboard, circle, ..."
    real_labels_hint(m)  for the built-in synthetic default only: how to get real labels

A model knows ImageNet's classes when its labels are exactly torchvision's 1000 category
names (`alexnet import-torchvision`), recognised by their sha256 so that this module
needs no torch. The built-in synthetic default is recognised by the marker that
`alexnet quickstart` writes into its manifest's `source`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from core.store import Manifest

# sha256 of "\n".join(torchvision's AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
IMAGENET_LABELS_SHA256 = "0b0f9fee7c952f257418d62aa701f023a9da13b443a14f5c4291e5724d92967c"
# torchvision's AlexNet weights file (AlexNet_Weights.IMAGENET1K_V1.url)
IMAGENET_WEIGHTS_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
# source["builtin"] of the synthetic default made by `alexnet quickstart`
SYNTHETIC_DEFAULT = "synthetic"
LISTED = 12  # class names spelled out; more are counted


def labels_sha256(labels: list[str]) -> str:
    return hashlib.sha256("\n".join(labels).encode()).hexdigest()


def is_imagenet(labels: list[str]) -> bool:
    """True for torchvision's 1000 ImageNet category names, in their order."""
    return len(labels) == 1000 and labels_sha256(labels) == IMAGENET_LABELS_SHA256


def knows(manifest: Manifest) -> str:
    """What the model tells apart: "1000 ImageNet classes", or its classes by name."""
    labels = manifest.labels
    if is_imagenet(labels):
        return "1000 ImageNet classes"
    listed = ", ".join(labels[:LISTED])
    more = f" and {len(labels) - LISTED} more" if len(labels) > LISTED else ""
    return f"{len(labels)} {'class' if len(labels) == 1 else 'classes'}: {listed}{more}"


def real_labels_hint(manifest: Manifest) -> str | None:
    """For the built-in synthetic default: what it is, and the command that gives real
    labels; None for every other model."""
    if manifest.source.get("builtin") != SYNTHETIC_DEFAULT:
        return None
    weights = Path(IMAGENET_WEIGHTS_URL).name
    return (
        "the built-in default, trained on drawn shapes and patterns: photographs get one of "
        f"its {manifest.num_classes} labels. For 1000 real ImageNet labels, import torchvision's "
        f"weights ({IMAGENET_WEIGHTS_URL}): `alexnet import-torchvision --name imagenet "
        f"--weights-file {weights}`, then serve it with `ALEXNET_MODEL=imagenet "
        "ALEXNET_GALLERY=gallery-imagenet make run`"
    )
