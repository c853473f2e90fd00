"""The built-in default model, made offline: generated images -> training -> export -> gallery.

    build_default(DefaultRecipe(data_dir=..., run_dir=..., store=...), gallery=settings)

One pipeline for `alexnet quickstart` (`make run`) and the bench. Each step is skipped
when its result already exists, so an interrupted build continues where it stopped:

    1. synth     data_dir/{train,val}     a generated image set (written beside, renamed in)
    2. train     run_dir/                 the `bn` variant, CUDA when present, else CPU
    3. export    store/NAME/1/            verified ONNX with ten crops, figures, pictures
    4. gallery   the settings' gallery    the validation images, labelled by folder

It spans both packages (training makes the model, the service's indexing fills the
gallery), so it lives here, above them.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from core import constants as C
from core import store
from core.imaging import find_images

log = logging.getLogger("quickstart")

STEPS = 4


@dataclass
class DefaultRecipe:
    """What the default build makes, and where."""

    data_dir: Path = Path("data/default")
    run_dir: Path = Path("runs/default")
    store: Path = Path(C.STORE_DIR)
    name: str = "default"
    classes: int = 6
    per_class: int = 120  # 96 train + 24 val per class
    epochs: int | None = None  # None: 10 on CPU (about 7 minutes on 2 cores), 40 on CUDA
    batch_size: int = 32
    train_device: str = "auto"
    workers: int | None = None  # loader processes (None: 1 on CPU, training's default on CUDA)
    evaluate: bool = True  # record 1- and 10-crop figures on val/ in the manifest
    progress: bool = True


DEFAULT_EPOCHS = {"cpu": 10, "cuda": 40}


def step(number: int, text: str) -> None:
    log.info("[%d/%d] %s", number, STEPS, text)


def make_dataset(recipe: DefaultRecipe) -> None:
    from training import synth

    data_dir = recipe.data_dir
    if (data_dir / "train").is_dir() and (data_dir / "val").is_dir():
        step(1, f"image set: reusing {data_dir}")
        return
    step(1, f"image set: generating {recipe.classes} classes x {recipe.per_class} in {data_dir}")
    # generated beside the target and renamed into place, so a half-written set is never reused
    tmp = data_dir.with_name(f".{data_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    synth.generate(tmp, classes=recipe.classes, per_class=recipe.per_class, seed=0,
                   progress=recipe.progress)  # fmt: skip
    tmp.rename(data_dir)


def train_model(recipe: DefaultRecipe) -> Path:
    """Train (or resume, or reuse) the run; its best checkpoint."""
    from training.checkpoint import load_checkpoint
    from training.evaluate import resolve_device
    from training.train import TrainConfig, train

    device = resolve_device(recipe.train_device)
    epochs = recipe.epochs or DEFAULT_EPOCHS["cuda" if device.type == "cuda" else "cpu"]
    last = recipe.run_dir / C.CHECKPOINT_LAST
    done = load_checkpoint(last)["epoch"] + 1 if last.exists() else 0
    if done >= epochs:
        step(2, f"training: reusing {recipe.run_dir} ({done} epochs)")
        return recipe.run_dir / C.CHECKPOINT_BEST
    where = f"continuing {recipe.run_dir} at epoch {done + 1}" if done else f"into {recipe.run_dir}"
    step(2, f"training the bn variant for {epochs} epochs on {device.type} {where}")
    workers = recipe.workers
    if workers is None and device.type == "cpu":
        workers = 1  # small machines: one loader process is enough on CPU
    train(TrainConfig(
        data=recipe.data_dir, output=recipe.run_dir, arch="bn", epochs=epochs,
        batch_size=recipe.batch_size, device=str(device), workers=workers,
        resume=last if done else None, no_progress=not recipe.progress,
    ))  # fmt: skip
    return recipe.run_dir / C.CHECKPOINT_BEST


def export_model(recipe: DefaultRecipe, checkpoint: Path) -> Path:
    """Export (or reuse) version 1 of the default; its folder."""
    from training.export import export_run

    if store.versions(recipe.store, recipe.name):
        folder = store.resolve(recipe.store, recipe.name)
        step(3, f"export: reusing {folder}")
        return folder
    step(3, f"export: {checkpoint} -> {recipe.store}/{recipe.name}")
    return export_run(checkpoint, store_dir=recipe.store, name=recipe.name,
                      data=recipe.data_dir if recipe.evaluate else None, workers=1,
                      progress=recipe.progress)  # fmt: skip


def fill_gallery(recipe: DefaultRecipe, settings) -> None:
    """Add the validation images to the settings' gallery (unless it exists)."""
    from service import indexing
    from service.gallery import shown, stored_model

    settings = settings.model_copy(update={"store": recipe.store, "model": recipe.name})
    if stored_model(settings.gallery) is not None:
        step(4, f"gallery: reusing {shown(settings.gallery)}")
        return
    step(4, f"gallery: adding {recipe.data_dir / 'val'} to {shown(settings.gallery)}")
    engine = indexing.engine_for(settings)
    with indexing.open_gallery(settings, engine) as gallery:
        ids, skipped = indexing.index_images(
            gallery, engine, find_images(recipe.data_dir / "val"), settings=settings,
            label_of=lambda p: p.parent.name, progress=recipe.progress,
        )  # fmt: skip
    log.info("added %d images to %s; %d skipped", len(ids), shown(settings.gallery), skipped)


def build_default(recipe: DefaultRecipe, gallery=None) -> Path:
    """Make the default model (and, given the service's Settings, its gallery), reusing
    every finished step; the model's store version folder."""
    make_dataset(recipe)
    checkpoint = train_model(recipe)
    folder = export_model(recipe, checkpoint)
    if gallery is not None:
        fill_gallery(recipe, gallery)
    return folder
