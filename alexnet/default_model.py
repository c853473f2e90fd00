"""The built-in default model: torchvision's ImageNet AlexNet when its weights can be had,
else one trained offline on generated images; then int8 and a gallery.

    build_default(DefaultRecipe(data_dir=..., run_dir=..., store=...), gallery=settings)

One pipeline for `alexnet quickstart` (`make run`) and the bench. Each step is skipped
when its result already exists, so an interrupted build continues where it stopped:

    1. synth     data_dir/{train,val}     a generated image set (written beside, renamed in):
                                          training data, int8 calibration, gallery samples
    2. weights   the torch hub cache      torchvision's IMAGENET1K_V1 file: found in the
                                          cache, else downloaded unless offline (a short
                                          timeout); none: the synthetic default
    3. model     store/NAME/1/            ImageNet: those weights imported (1000 labels);
                                          synthetic: the `bn` variant trained with the
                                          `quickstart` recipe in run_dir/, exported
    4. int8      store/NAME/1/            model.int8.onnx, kept when it agrees with fp32
                                          (`training.quantize`); refused: fp32 is served
    5. gallery   the settings' gallery    the validation images, labelled by folder

Offline (`offline=True`, ALEXNET_OFFLINE=1 for `alexnet quickstart`) nothing is
downloaded. It spans both packages (training makes the model, the service's indexing
fills the gallery), so it lives here, above them.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from core import constants as C
from core import model_info, store
from core.imaging import find_images

log = logging.getLogger("quickstart")

STEPS = 5
SOURCES = ("auto", "imagenet", "synthetic")
OFFLINE_ENV = "ALEXNET_OFFLINE"  # "1": never download (the tests and CI set it)


def offline_from_env() -> bool:
    """ALEXNET_OFFLINE set to 1, true or yes."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


@dataclass
class DefaultRecipe:
    """What the default build makes, and where."""

    data_dir: Path = Path("data/default")
    run_dir: Path = Path("runs/default")
    store: Path = Path(C.STORE_DIR)
    name: str = "default"
    source: str = "auto"  # auto: ImageNet weights when they can be had, else synthetic
    offline: bool = False  # never download the ImageNet weights
    download_timeout_s: float = 10.0  # the download must answer (and not stall) within this
    train_recipe: str = "quickstart"  # training.recipes: the same compute as the paper's
    int8: bool = True  # add model.int8.onnx (kept only when it agrees with fp32)
    calibration_images: int = 400  # read from data_dir for int8: half calibrate, half check
    classes: int = 6
    per_class: int = 360  # 288 train + 72 val per class
    epochs: int | None = None  # None: DEFAULT_EPOCHS (7 on CPU, 40 on CUDA)
    batch_size: int | None = None  # None: the training recipe's
    train_device: str = "auto"
    workers: int | None = None  # loader processes (None: 1 on CPU, training's default on CUDA)
    evaluate: bool = True  # record 1- and 10-crop figures on val/ in the manifest
    progress: bool = True


# On CPU: 7 epochs of 6 x 288 training images (the quickstart recipe's budget, README: "The
# quickstart training recipe"); a GPU affords more.
DEFAULT_EPOCHS = {"cpu": 7, "cuda": 40}


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
    from training.recipes import recipe as train_recipe
    from training.train import TrainConfig, train

    device = resolve_device(recipe.train_device)
    epochs = recipe.epochs or DEFAULT_EPOCHS["cuda" if device.type == "cuda" else "cpu"]
    last = recipe.run_dir / C.CHECKPOINT_LAST
    done = load_checkpoint(last)["epoch"] + 1 if last.exists() else 0
    if done >= epochs:
        step(3, f"training: reusing {recipe.run_dir} ({done} epochs)")
        return recipe.run_dir / C.CHECKPOINT_BEST
    where = f"continuing {recipe.run_dir} at epoch {done + 1}" if done else f"into {recipe.run_dir}"
    step(3, f"training the bn variant ({recipe.train_recipe} recipe) for {epochs} epochs on "
            f"{device.type} {where}")  # fmt: skip
    workers = recipe.workers
    if workers is None and device.type == "cpu":
        workers = 1  # small machines: one loader process is enough on CPU
    settings = train_recipe(recipe.train_recipe)
    if recipe.batch_size is not None:
        settings["batch_size"] = recipe.batch_size
    train(TrainConfig(
        data=recipe.data_dir, output=recipe.run_dir, arch="bn", epochs=epochs, device=str(device),
        workers=workers, resume=last if done else None, no_progress=not recipe.progress,
        **settings,
    ))  # fmt: skip
    return recipe.run_dir / C.CHECKPOINT_BEST


def export_model(recipe: DefaultRecipe, checkpoint: Path) -> Path:
    """Export version 1 of the synthetic default; its folder."""
    from training.export import export_run

    step(3, f"export: {checkpoint} -> {recipe.store}/{recipe.name}")
    return export_run(checkpoint, store_dir=recipe.store, name=recipe.name,
                      data=recipe.data_dir if recipe.evaluate else None, workers=1,
                      progress=recipe.progress,
                      source_extra={"builtin": model_info.SYNTHETIC_DEFAULT})  # fmt: skip


def find_imagenet_weights(recipe: DefaultRecipe) -> Path | None:
    """torchvision's ImageNet weights file when the recipe may and can use it."""
    from training.import_torchvision import find_weights, hub_weights_path

    if recipe.source == "synthetic":
        step(2, "ImageNet weights: not asked for (the synthetic default)")
        return None
    weights = find_weights(offline=recipe.offline, timeout=recipe.download_timeout_s,
                           progress=recipe.progress)  # fmt: skip
    if weights is not None:
        step(2, f"ImageNet weights: {weights}")
        return weights
    if recipe.source == "imagenet":
        raise FileNotFoundError(
            f"no ImageNet weights: put {hub_weights_path().name} in {hub_weights_path().parent}"
            + ("" if recipe.offline else " or let it be downloaded")
        )
    why = "offline" if recipe.offline else "no answer from download.pytorch.org"
    step(2, f"ImageNet weights: not in {hub_weights_path().parent} and {why}: the synthetic "
            "default (6 drawn classes) is built instead")  # fmt: skip
    return None


def import_imagenet(recipe: DefaultRecipe, weights: Path) -> Path:
    """torchvision's ImageNet AlexNet as version 1 of the default; its folder."""
    from training.import_torchvision import import_torchvision

    step(3, f"import: torchvision's ImageNet AlexNet ({weights.name}) -> "
            f"{recipe.store}/{recipe.name}")  # fmt: skip
    return import_torchvision(store_dir=recipe.store, name=recipe.name, weights_file=weights)


def make_model(recipe: DefaultRecipe) -> Path:
    """Reuse, import or train-and-export version 1 of the default; its folder."""
    if store.versions(recipe.store, recipe.name):
        folder = store.resolve(recipe.store, recipe.name)
        step(3, f"model: reusing {folder}")
        return folder
    weights = find_imagenet_weights(recipe)
    if weights is not None:
        return import_imagenet(recipe, weights)
    return export_model(recipe, train_model(recipe))


def add_int8(recipe: DefaultRecipe, folder: Path) -> None:
    """model.int8.onnx beside model.onnx (about 3x faster on CPU), calibrated on the image set;
    refused when it is not shown to agree with fp32 (then fp32 is served)."""
    from training.quantize import AgreementTooLowError, quantize

    if not recipe.int8:
        return
    manifest = store.read_manifest(folder)
    if "int8" in manifest.files:
        step(4, f"int8: reusing {folder / manifest.files['int8'].file}")
        return
    step(4, f"int8: calibrating on {recipe.data_dir} and checking it against fp32")
    try:
        quantize(recipe.store, manifest.id, recipe.data_dir, images=recipe.calibration_images,
                 precisions=("int8",))  # fmt: skip
    except AgreementTooLowError as e:
        log.warning("int8 not added, fp32 will be served: %s", e)


def fill_gallery(recipe: DefaultRecipe, settings) -> None:
    """Add the validation images to the settings' gallery (unless it exists)."""
    from service import indexing
    from service.gallery import shown, stored_model

    settings = settings.model_copy(update={"store": recipe.store, "model": recipe.name})
    if stored_model(settings.gallery) is not None:
        step(5, f"gallery: reusing {shown(settings.gallery)}")
        return
    step(5, f"gallery: adding {recipe.data_dir / 'val'} to {shown(settings.gallery)}")
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
    if recipe.source not in SOURCES:
        raise ValueError(f"Unknown source {recipe.source!r}. Only {', '.join(SOURCES)} are "
                         "supported.")  # fmt: skip
    make_dataset(recipe)
    folder = make_model(recipe)
    add_int8(recipe, folder)
    if gallery is not None:
        fill_gallery(recipe, gallery)
    return folder
