"""`alexnet quickstart` (`make run`): serve the store's model, building the default first.

    alexnet quickstart                 # build the built-in default if the store is empty, serve
    alexnet quickstart --build-only    # only build it
    ALEXNET_MODEL=imagenet alexnet quickstart   # serve another store model (nothing is built)

When the model store holds no model, the built-in default is made offline, one step at a
time, each skipped when its result already exists (so an interrupted build continues):

    1. synth     data/default/{train,val}  a generated 6-class image set
    2. train     runs/default/             the `bn` variant, CUDA when present, else CPU
    3. export    model_store/default/1/    verified ONNX with ten crops, figures, pictures
    4. gallery   gallery/                  the validation images, labelled by folder

then `alexnet serve` runs with the usual settings (ALEXNET_* variables and options).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from core import store
from service.serve_cli import add_model_arguments, settings_from
from core import constants as C

log = logging.getLogger("quickstart")

DEFAULT_NAME = "default"
DEFAULT_CLASSES = 6
DEFAULT_PER_CLASS = 120  # 96 train + 24 val per class
DEFAULT_EPOCHS = {"cpu": 10, "cuda": 40}  # about 7 minutes on 2 CPU cores; seconds on a GPU
DEFAULT_BATCH = 32


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet quickstart",
        description="Serve the model store's model; when the store is empty, first build the "
        "built-in default offline (generated image set -> training -> export -> gallery). "
        "Every step reuses what an earlier run left.",
    )
    add_model_arguments(p)
    p.add_argument(
        "--host", default=None, help="address to listen on (ALEXNET_HOST; default: 127.0.0.1)"
    )
    p.add_argument("--port", type=int, default=None, help="port (ALEXNET_PORT; default: 8000)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data/default"),
        help="where the generated image set goes (default: data/default)",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=Path("runs/default"),
        help="where the training run goes (default: runs/default)",
    )
    p.add_argument(
        "--classes",
        type=int,
        default=DEFAULT_CLASSES,
        help=f"classes of the generated set (default: {DEFAULT_CLASSES})",
    )
    p.add_argument(
        "--per-class",
        type=int,
        default=DEFAULT_PER_CLASS,
        help=f"images per class, 80%% train / 20%% val (default: {DEFAULT_PER_CLASS})",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"training epochs (default: {DEFAULT_EPOCHS['cpu']} on CPU, "
        f"{DEFAULT_EPOCHS['cuda']} on CUDA)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH,
        help=f"training batch size (default: {DEFAULT_BATCH})",
    )
    p.add_argument(
        "--train-device", default="auto", help="auto, cpu or cuda for training (default: auto)"
    )
    p.add_argument("--build-only", action="store_true", help="build the default, do not serve")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def step(number: int, text: str) -> None:
    log.info("[%d/4] %s", number, text)


def make_dataset(args: argparse.Namespace) -> None:
    from training import synth

    if (args.data_dir / "train").is_dir() and (args.data_dir / "val").is_dir():
        step(1, f"image set: reusing {args.data_dir}")
        return
    step(1, f"image set: generating {args.classes} classes x {args.per_class} in {args.data_dir}")
    # generated beside the target and renamed into place, so a half-written set is never reused
    tmp = args.data_dir.with_name(f".{args.data_dir.name}.tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    synth.generate(
        tmp, classes=args.classes, per_class=args.per_class, seed=0, progress=not args.no_progress
    )
    tmp.rename(args.data_dir)


def train_model(args: argparse.Namespace) -> Path:
    from training import train
    from training.checkpoint import load_checkpoint
    from training.evaluate import resolve_device

    device = resolve_device(args.train_device)
    epochs = args.epochs or DEFAULT_EPOCHS["cuda" if device.type == "cuda" else "cpu"]
    last = args.run_dir / C.CHECKPOINT_LAST
    done = 0
    if last.exists():
        done = load_checkpoint(last)["epoch"] + 1
    if done >= epochs:
        step(2, f"training: reusing {args.run_dir} ({done} epochs)")
        return args.run_dir / C.CHECKPOINT_BEST
    what = f"continuing {args.run_dir} at epoch {done + 1}" if done else f"into {args.run_dir}"
    step(2, f"training the bn variant for {epochs} epochs on {device.type} {what}")
    argv = ["--data", str(args.data_dir), "--output", str(args.run_dir), "--arch", "bn",
            "--epochs", str(epochs), "--batch-size", str(args.batch_size),
            "--device", str(device)]  # fmt: skip
    if done:
        argv += ["--resume", str(last)]
    if device.type == "cpu":
        argv += ["--workers", "1"]  # small machines: one loader process is enough on CPU
    if args.no_progress:
        argv.append("--no-progress")
    train.main(train.get_args_parser().parse_args(argv))
    return args.run_dir / C.CHECKPOINT_BEST


def export_model(args: argparse.Namespace, checkpoint: Path, store_dir: Path) -> None:
    from training import export

    step(3, f"export: {checkpoint} -> {store_dir}/{DEFAULT_NAME}")
    export.main(export.get_args_parser().parse_args(
        [str(checkpoint), "--name", DEFAULT_NAME, "--store", str(store_dir),
         "--data", str(args.data_dir), "--workers", "1"]
    ))  # fmt: skip


def fill_gallery(args: argparse.Namespace) -> None:
    from service import gallery, index_cli

    settings = settings_from(args)
    if gallery.stored_model(settings.gallery) is not None:
        step(4, f"gallery: reusing {settings.gallery}")
        return
    step(4, f"gallery: adding {args.data_dir / 'val'} to {settings.gallery}")
    index_cli.main(index_cli.get_args_parser().parse_args(
        [str(args.data_dir / "val"), "--label-from-folder", "--store", str(settings.store),
         "--model", DEFAULT_NAME, "--gallery", str(settings.gallery)]
    ))  # fmt: skip


def build_default(args: argparse.Namespace) -> None:
    """Make the built-in default model and its gallery, reusing every finished step."""
    settings = settings_from(args)
    make_dataset(args)
    checkpoint = train_model(args)
    export_model(args, checkpoint, settings.store)
    fill_gallery(args)


def main(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    names = store.list_names(settings.store)
    if not names:
        log.info("the model store %s is empty: building the built-in default", settings.store)
        build_default(args)
    elif names == [DEFAULT_NAME] and not settings.model:
        fill_gallery(args)  # the build may have stopped after the export
    else:
        log.info("serving from %s (models: %s)", settings.store, ", ".join(names))
    if args.build_only:
        return
    from service import serve_cli

    args.model = args.model or (DEFAULT_NAME if not names else None)
    serve_cli.main(args)
