"""Checkpoints as the contract describes them (docs/contract.md, "Checkpoint")."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from core.durable import fsync_path, write_atomic
from training.model import VARIANTS, AlexNet, build_model

REQUIRED_KEYS = ("model", "arch", "num_classes", "labels", "crop_size", "normalization")


def save_atomic(obj: dict[str, Any], path: str | Path) -> None:
    """torch.save through the project's durable write (`core.durable.write_atomic`).

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    write_atomic(path, lambda f: torch.save(obj, f))


def link_atomic(src: str | Path, dst: str | Path) -> None:
    """Make `dst` another name for the file `src` (a copy where links are unsupported).

    `save_atomic` replaces files by renaming, so a later save of `src` leaves `dst` as it was.
    """
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    fsync_path(dst.parent)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint written by `alexnet train`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or (missing := [k for k in REQUIRED_KEYS if k not in ckpt]):
        raise ValueError(f"{path} is not an AlexNet checkpoint (missing {missing})")
    if ckpt["arch"] not in VARIANTS:
        raise ValueError(f"{path}: unknown arch {ckpt['arch']!r}; known: {', '.join(VARIANTS)}")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> AlexNet:
    """The network of a loaded checkpoint, with its weights, in eval mode."""
    model = build_model(ckpt["arch"], ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    return model.eval()
