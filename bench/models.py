"""The benchmark's own model, made offline by the default-model pipeline (a synthetic image
set and a short `bn` run, exported) plus `training.quantize` (int8), in a work folder.

Weights barely matter for speed; a short run (rather than random weights) gives the int8
model confident predictions whose top-1 agreement with fp32 means something.
"""

from __future__ import annotations

from pathlib import Path

from alexnet.default_model import DefaultRecipe, build_default
from core import store

NAME = "bench"


def build(work: Path, *, classes: int = 6, per_class: int = 60, epochs: int = 3) -> Path:
    """Make (once) `work/store/bench/1` with model.onnx and model.int8.onnx; the store folder."""
    from training.quantize import quantize

    recipe = DefaultRecipe(
        data_dir=work / "synth", run_dir=work / "run", store=work / "store", name=NAME,
        source="synthetic", offline=True, classes=classes, per_class=per_class, epochs=epochs,
        batch_size=16, train_device="cpu", workers=0, evaluate=False, progress=False,
    )  # fmt: skip
    folder = build_default(recipe)
    if "int8" not in store.read_manifest(folder).files:
        # agreement is measured on held-out images and reported; the bench keeps the file anyway
        quantize(recipe.store, NAME, recipe.data_dir, images=min(320, classes * per_class),
                 precisions=("int8",), min_agreement=0)  # fmt: skip
    return recipe.store


def int8_agreement(store_dir: Path) -> dict:
    """What `alexnet quantize` measured on held-out images: top-1 agreement, top-5 overlap."""
    return store.read_manifest(store.resolve(store_dir, f"{NAME}:1")).files["int8"].details
