"""A store model from torchvision's ImageNet weights (`alexnet import-torchvision`).

This is what that gives real ImageNet top-5 labels. The weights are torchvision's
IMAGENET1K_V1 (its single-GPU AlexNet, 224 crops, 56.5% / 79.1% top-1 / top-5 accuracy
with one centre crop, as torchvision publishes them); the 1000 category names come from
torchvision's weight metadata, which is available offline. The normalization those
weights expect (mean 0.485/0.456/0.406, std 0.229/0.224/0.225 in [0, 1] units) goes into
the graph, so the service needs nothing special.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.request
from pathlib import Path

import torch
from torchvision.models import AlexNet_Weights
from tqdm import tqdm

from core import constants as C
from core import store
from core.durable import write_atomic
from training.export import export_checkpoint
from training.model import build_model

log = logging.getLogger(__name__)
WEIGHTS = AlexNet_Weights.IMAGENET1K_V1


def published_sha256_prefix() -> str:
    """torchvision names its files <arch>-<first 8 hex digits of the file's sha256>.pth."""
    return Path(WEIGHTS.url).stem.rsplit("-", 1)[-1]


def hub_weights_path() -> Path:
    """Where torchvision keeps (and looks for) the weights file: the torch hub cache,
    torch.hub.get_dir()/checkpoints/ (TORCH_HOME, default ~/.cache/torch/hub)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(WEIGHTS.url).name


def download_weights(path: Path, *, timeout: float, progress: bool = True) -> None:
    """Download torchvision's file to `path`, giving up when the server does not answer (or
    stalls) for `timeout` seconds; it is written beside and renamed in once its sha256
    starts as torchvision's file name says.

    Raises:
        OSError: no answer, a stall or a network error (nothing is left at `path`).
        ValueError: what came is not torchvision's file.
    """

    def fetch(out) -> None:
        digest = hashlib.sha256()
        with urllib.request.urlopen(WEIGHTS.url, timeout=timeout) as r:
            size = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc=path.name,
                      disable=not progress) as bar:  # fmt: skip
                while block := r.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        if not digest.hexdigest().startswith(published_sha256_prefix()):
            raise ValueError(f"{WEIGHTS.url} gave a file whose sha256 is not torchvision's")

    write_atomic(path, fetch)  # the temporary file is removed on any failure


def find_weights(*, offline: bool, timeout: float = 10.0, progress: bool = True) -> Path | None:
    """torchvision's ImageNet weights file, if it can be had: the torch hub cache, else (not
    `offline`) a download into it that must answer within `timeout` seconds; else None."""
    path = hub_weights_path()
    if path.is_file():
        return path
    if offline:
        log.info("no %s in the torch hub cache and offline: not downloading", path.name)
        return None
    log.info("downloading %s into %s (gives up after %.0f s without an answer)",
             WEIGHTS.url, path.parent, timeout)  # fmt: skip
    try:
        download_weights(path, timeout=timeout, progress=progress)
    except (OSError, ValueError) as e:
        log.info("could not download %s: %s", WEIGHTS.url, e)
        return None
    return path


def read_state_dict(weights_file: Path | None) -> tuple[dict, dict]:
    """The state_dict and a description of where it came from."""
    if weights_file is None:
        try:
            state = WEIGHTS.get_state_dict(progress=True, check_hash=True)
        except OSError as e:  # URLError is an OSError
            raise RuntimeError(
                f"could not download {WEIGHTS.url} ({e}); on an offline machine pass "
                "--weights-file with a copy of that file"
            ) from None
        return state, {"weights": str(WEIGHTS), "url": WEIGHTS.url}
    if not weights_file.is_file():
        raise FileNotFoundError(f"no weights file at {weights_file}")
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    digest = store.sha256_file(weights_file)
    return state, {"weights_file": str(weights_file.resolve()), "sha256": digest,
                   "published": digest.startswith(published_sha256_prefix())}  # fmt: skip


def checkpoint_from(state: dict) -> dict:
    """A checkpoint in the contract's format around torchvision's state_dict."""
    model = build_model("torchvision", len(WEIGHTS.meta["categories"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"not a torchvision AlexNet state_dict: {str(e).splitlines()[0]}"
        ) from None
    return {
        "model": model.state_dict(),
        "arch": "torchvision",
        "num_classes": len(WEIGHTS.meta["categories"]),
        "labels": list(WEIGHTS.meta["categories"]),
        "crop_size": C.TORCHVISION_CROP,
        # in 0..255 units, like every normalization here
        "normalization": {
            "mean": torch.tensor(C.IMAGENET_MEAN) * 255,
            "std": torch.tensor(C.IMAGENET_STD) * 255,
            "kind": "per_channel",
        },
        "epoch": None,
        "metrics": [],
    }


def published_metrics() -> dict:
    acc = WEIGHTS.meta["_metrics"]["ImageNet-1K"]
    return {
        "single_crop": {
            "top1_err": round(1 - acc["acc@1"] / 100, 5),
            "top5_err": round(1 - acc["acc@5"] / 100, 5),
        },
        "source": "torchvision's published ImageNet-1K validation figures for IMAGENET1K_V1",
    }


def import_torchvision(
    *, store_dir: Path, name: str, version: int | None = None, weights_file: Path | None = None
) -> Path:
    """Export torchvision's IMAGENET1K_V1 AlexNet as a new store version; returns its folder.

    Args:
        store_dir, name, version: where the new version goes (version None: the next one).
        weights_file: a local copy of the weights (None: torchvision's download).
    """
    state, source = read_state_dict(weights_file)
    ckpt = checkpoint_from(state)
    published = weights_file is None or source["published"]
    if not published:
        log.warning(
            "%s is not torchvision's published file (sha256 differs); no accuracy figures recorded",
            weights_file,
        )
    return export_checkpoint(
        ckpt, store_dir=store_dir, name=name, version=version, source=source,
        metrics=published_metrics() if published else {},
    )  # fmt: skip
