"""The benchmark's own model, made offline: a synthetic image set, a short `bn` training run,
`alexnet export` and `alexnet quantize` (int8), in a work folder.

Weights barely matter for speed; a short run (rather than random weights) gives the int8
model confident predictions whose top-1 agreement with fp32 means something.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
NAME = "bench"


def _cli(*args: str) -> None:
    log.info("alexnet %s", " ".join(args))
    subprocess.run([sys.executable, "-m", "training.cli", *args], cwd=REPO, check=True)


def build(work: Path, *, classes: int = 6, per_class: int = 60, epochs: int = 3) -> Path:
    """Make (once) `work/store/bench/1` with model.onnx and model.int8.onnx; the store folder."""
    store, data, run = work / "store", work / "synth", work / "run"
    version = store / NAME / "1"
    if (version / "model.int8.onnx").is_file():
        return store
    if not (data / "train").is_dir():
        _cli("synth", str(data), "--classes", str(classes), "--per-class", str(per_class),
             "--seed", "0", "--no-progress")  # fmt: skip
    if not (run / "checkpoint.pt").is_file():
        _cli("train", "--data", str(data), "--output", str(run), "--arch", "bn", "--epochs",
             str(epochs), "--batch-size", "16", "--device", "cpu", "--workers", "0",
             "--no-progress")  # fmt: skip
    if not (version / "model.onnx").is_file():
        _cli("export", str(run / "checkpoint.pt"), "--name", NAME, "--store", str(store))
    # agreement is measured on held-out images and reported; the bench keeps the file anyway
    images = str(min(320, classes * per_class))
    _cli("quantize", NAME, "--calibration", str(data), "--store", str(store), "--images", images,
         "--precisions", "int8", "--min-agreement", "0")  # fmt: skip
    return store


def int8_agreement(store: Path) -> dict:
    """What `alexnet quantize` measured on held-out images: top-1 agreement, top-5 overlap."""
    manifest = json.loads((store / NAME / "1" / "manifest.json").read_text())
    return manifest["files"]["int8"]["details"]
