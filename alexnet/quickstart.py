"""`alexnet quickstart` (`make run`): serve the store's model, building the default first.

    alexnet quickstart                 # build the built-in default if the store is empty, serve
    alexnet quickstart --build-only    # only build it
    ALEXNET_OFFLINE=1 alexnet quickstart        # never download: the synthetic default
    ALEXNET_MODEL=imagenet alexnet quickstart   # serve another store model (nothing is built)

When the model store holds no model, the built-in default is made one step at a time,
each skipped when its result already exists (`alexnet.default_model`): a generated
6-class image set; torchvision's ImageNet AlexNet when its weights are in the torch hub
cache or download within a short timeout (1000 ImageNet labels), else the `bn` variant
trained on the generated set; int8; a gallery of the generated validation images. With
several models in the store and none named, the default is served. The log says what the
served model knows. Then the service runs with the usual settings (ALEXNET_* variables
and options).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from alexnet.args import add_listen_arguments, add_model_arguments, settings_from
from alexnet.default_model import (
    DEFAULT_EPOCHS,
    OFFLINE_ENV,
    SOURCES,
    DefaultRecipe,
    build_default,
    offline_from_env,
)
from core import model_info, store

log = logging.getLogger("quickstart")
D = DefaultRecipe


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet quickstart",
        description="Serve the model store's model; when the store is empty, first build the "
        "built-in default: torchvision's ImageNet AlexNet (1000 labels) when its weights are in "
        "the torch hub cache or can be downloaded within a short timeout, else a model trained "
        "offline on a generated 6-class image set; then int8 and a gallery. Every step reuses "
        "what an earlier run left. With several models in the store and no --model, the "
        "default is served.",
    )
    add_model_arguments(p)
    add_listen_arguments(p)
    p.add_argument(
        "--default",
        dest="source",
        choices=SOURCES,
        default=D.source,
        help="what an empty store gets: auto (ImageNet weights when they can be had, else "
        "synthetic), imagenet (fail without them) or synthetic (default: auto)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        default=None,
        help=f"never download the ImageNet weights, only look in the torch hub cache "
        f"(also {OFFLINE_ENV}=1)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=D.data_dir,
        help=f"where the generated image set goes (default: {D.data_dir})",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=D.run_dir,
        help=f"where the training run goes (default: {D.run_dir})",
    )
    p.add_argument(
        "--classes",
        type=int,
        default=D.classes,
        help=f"classes of the generated set (default: {D.classes})",
    )
    p.add_argument(
        "--per-class",
        type=int,
        default=D.per_class,
        help=f"images per class, 80%% train / 20%% val (default: {D.per_class})",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=D.epochs,
        help=f"training epochs (default: {DEFAULT_EPOCHS['cpu']} on CPU, "
        f"{DEFAULT_EPOCHS['cuda']} on CUDA)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=D.batch_size,
        help="training batch size (default: the quickstart training recipe's)",
    )
    p.add_argument(
        "--train-device",
        default=D.train_device,
        help=f"auto, cpu or cuda for training (default: {D.train_device})",
    )
    p.add_argument(
        "--calibration-images",
        type=int,
        default=D.calibration_images,
        help="generated images read for int8: half calibrate it, half check it against fp32 "
        f"(default: {D.calibration_images})",
    )
    p.add_argument("--build-only", action="store_true", help="build the default, do not serve")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    recipe = DefaultRecipe(
        data_dir=args.data_dir, run_dir=args.run_dir, store=settings.store,
        source=args.source, offline=args.offline or offline_from_env(),
        classes=args.classes, per_class=args.per_class, epochs=args.epochs,
        batch_size=args.batch_size, train_device=args.train_device,
        calibration_images=args.calibration_images, progress=not args.no_progress,
    )  # fmt: skip
    names = store.list_names(settings.store)
    if not names:
        log.info("the model store %s is empty: building the built-in default", settings.store)
        build_default(recipe, gallery=settings)
        names = [recipe.name]
    elif recipe.name in names and not settings.model:
        build_default(recipe, gallery=settings)  # the build may have stopped after the export
    if not settings.model and recipe.name in names:
        if len(names) > 1:
            log.info("the store %s holds %s: serving %s (set ALEXNET_MODEL or --model to serve "
                     "another)", settings.store, ", ".join(names), recipe.name)  # fmt: skip
        settings = settings.model_copy(update={"model": recipe.name})
    else:
        log.info("serving from %s (models: %s)", settings.store, ", ".join(names))
    say_what_it_knows(settings)
    if args.build_only:
        return
    from service.app import run

    run(settings)


def say_what_it_knows(settings) -> None:
    """Log what the model to be served tells apart, and, for the synthetic default, how to
    get real labels."""
    from service.config import model_spec

    manifest = store.read_manifest(store.resolve(settings.store, model_spec(settings)))
    log.info("the model %s knows %s", manifest.id, model_info.knows(manifest))
    hint = model_info.real_labels_hint(manifest)
    if hint:
        log.warning("%s is %s", manifest.id, hint)
