"""`alexnet quickstart` (`make run`): serve the store's model, building the default first.

    alexnet quickstart                 # build the built-in default if the store is empty, serve
    alexnet quickstart --build-only    # only build it
    ALEXNET_MODEL=imagenet alexnet quickstart   # serve another store model (nothing is built)

When the model store holds no model, the built-in default is made offline, one step at a
time, each skipped when its result already exists (`alexnet.default_model`): a generated
6-class image set, the `bn` variant trained on it, its export, and a gallery of its
validation images. Then the service runs with the usual settings (ALEXNET_* variables and
options).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from alexnet.args import add_listen_arguments, add_model_arguments, settings_from
from alexnet.default_model import DEFAULT_EPOCHS, DefaultRecipe, build_default, fill_gallery
from core import store

log = logging.getLogger("quickstart")
D = DefaultRecipe


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet quickstart",
        description="Serve the model store's model; when the store is empty, first build the "
        "built-in default offline (generated image set -> training -> export -> gallery). "
        "Every step reuses what an earlier run left.",
    )
    add_model_arguments(p)
    add_listen_arguments(p)
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
        help=f"training batch size (default: {D.batch_size})",
    )
    p.add_argument(
        "--train-device",
        default=D.train_device,
        help=f"auto, cpu or cuda for training (default: {D.train_device})",
    )
    p.add_argument("--build-only", action="store_true", help="build the default, do not serve")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    recipe = DefaultRecipe(
        data_dir=args.data_dir, run_dir=args.run_dir, store=settings.store,
        classes=args.classes, per_class=args.per_class, epochs=args.epochs,
        batch_size=args.batch_size, train_device=args.train_device,
        progress=not args.no_progress,
    )  # fmt: skip
    names = store.list_names(settings.store)
    if not names:
        log.info("the model store %s is empty: building the built-in default", settings.store)
        build_default(recipe, gallery=settings)
    elif names == [recipe.name] and not settings.model:
        fill_gallery(recipe, settings)  # the build may have stopped after the export
    else:
        log.info("serving from %s (models: %s)", settings.store, ", ".join(names))
    if args.build_only:
        return
    from service.app import run

    if not names and not settings.model:
        settings = settings.model_copy(update={"model": recipe.name})
    run(settings)
