"""The benchmark's own models, made offline in a work folder, once:

    bn      the default-model pipeline (a synthetic image set and a short `bn` run,
            exported) plus `training.quantize` (int8): store name `bench`.
    paper   the paper's network (LRN, grouped convolutions) trained on the same image set
            with `training.train` (10 epochs of the quickstart recipe from Caffe's
            initialization: the paper's own initialization and recipe stay at chance for
            that long), exported with `training.export` and quantized the same way: store
            name `bench-paper`.

Weights barely matter for speed; a short run (rather than random weights) gives the int8
model confident predictions whose top-1 agreement with fp32 means something.
"""

from __future__ import annotations

from pathlib import Path

from alexnet.default_model import DefaultRecipe, build_default
from core import constants as C
from core import store

NAME = "bench"
ARCHS = ("bn", "paper")
EPOCHS = 3
PAPER_EPOCHS = 10


def name_of(arch: str) -> str:
    """The store name of the bench model of `arch`."""
    if arch not in ARCHS:
        raise ValueError(f"Unknown arch {arch!r}. Only {', '.join(ARCHS)} are supported.")
    return NAME if arch == "bn" else f"{NAME}-{arch}"


def run_dir(work: Path, arch: str) -> Path:
    """The training run of `arch` (its checkpoint.pt feeds the naive baseline)."""
    return work / ("run" if arch == "bn" else f"run-{arch}")


def build(work: Path, arch: str = "bn", *, classes: int = 6, per_class: int = 60) -> Path:
    """Make (once) `work/store/<name>/1` with model.onnx and model.int8.onnx for `arch`
    (see the module docstring); the store folder."""
    recipe = DefaultRecipe(
        data_dir=work / "synth", run_dir=run_dir(work, "bn"), store=work / "store", name=NAME,
        source="synthetic", offline=True, classes=classes, per_class=per_class, epochs=EPOCHS,
        batch_size=16, train_device="cpu", workers=0, evaluate=False, progress=False,
    )  # fmt: skip
    if arch == "bn":
        folder = build_default(recipe)
    else:
        from alexnet.default_model import make_dataset

        make_dataset(recipe)  # the same synthetic image set
        folder = _train_and_export(work, arch, recipe.data_dir, recipe.store)
    if "int8" not in store.read_manifest(folder).files:
        from training.quantize import quantize

        # agreement is measured on held-out images and reported; the bench keeps the file anyway
        quantize(recipe.store, name_of(arch), recipe.data_dir,
                 images=min(320, classes * per_class), precisions=("int8",),
                 min_agreement=0)  # fmt: skip
    return recipe.store


def _train_and_export(work: Path, arch: str, data: Path, store_dir: Path) -> Path:
    """A short CPU run of `arch` (see the module docstring) exported as version 1 of its
    bench name; reused when both exist."""
    from training.recipes import recipe
    from training.train import TrainConfig, train

    name = name_of(arch)
    if (store_dir / name / "1" / "manifest.json").is_file():
        return store_dir / name / "1"
    run = run_dir(work, arch)
    if not (run / C.CHECKPOINT_BEST).is_file():
        settings = {**recipe("quickstart"), "batch_size": 16}
        train(TrainConfig(data=data, output=run, arch=arch, init="caffe", epochs=PAPER_EPOCHS,
                          device="cpu", workers=0, no_progress=True, **settings))  # fmt: skip
    from training.export import export_run

    return export_run(run / C.CHECKPOINT_BEST, store_dir=store_dir, name=name, version=1,
                      workers=1, progress=False)  # fmt: skip


def int8_agreement(store_dir: Path, arch: str = "bn") -> dict:
    """What `alexnet quantize` measured on held-out images: top-1 agreement, top-5 overlap."""
    return store.read_manifest(store.resolve(store_dir, f"{name_of(arch)}:1")).files["int8"].details
