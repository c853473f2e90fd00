"""`alexnet`: one command with a subcommand per job.

Each subcommand's module (`alexnet/<command>.py`) owns its parser (`get_args_parser`) and
`main(args)`; this file only wires them, importing a module when its subcommand runs so
`alexnet --help` is fast and the serving image (no torch, no `training`) runs the
service's commands.

Exit status: 0 when the command did its job; 1 on an error (one logged line, no
traceback), or when the result of `main(args)` has an `exit_code` that says so (`alexnet
predict`: some files were skipped); 2 for a command line that cannot run (argparse's usage
errors and `UsageError`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from alexnet.args import UsageError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": (
        "alexnet.quickstart",
        "serve the store's model, first building the built-in default if the store is empty",
    ),
    "synth": ("alexnet.synth", "write a procedurally drawn, labelled image set"),
    "prepare": (
        "alexnet.prepare",
        "write a set's images once as 256x256 shards that training reads fast",
    ),
    "train": ("alexnet.train", "train AlexNet on a class-per-folder or prepared image set"),
    "evaluate": ("alexnet.evaluate", "top-1/top-5 error with one centre crop and with ten crops"),
    "export": ("alexnet.export", "export a checkpoint (or an ensemble) to the store as ONNX"),
    "import-torchvision": (
        "alexnet.import_torchvision",
        "make a store model from torchvision's ImageNet AlexNet weights",
    ),
    "quantize": ("alexnet.quantize", "add int8 (CPU) and fp16 (CUDA) files to a store version"),
    "plot": ("alexnet.plot", "draw a run's training curves (loss, error, lr) as a PNG"),
    "filters": ("alexnet.filters", "draw the conv1 kernels as an image grid (Figure 3)"),
    "models": ("alexnet.models", "list the models in the store"),
    "predict": (
        "alexnet.predict",
        "top-k labels of image files, with the store's model here or from a running service",
    ),
    "serve": ("alexnet.serve", "run the HTTP service (predict, similar, gallery)"),
    "index": ("alexnet.index", "add a folder of images to the gallery"),
    "reindex": ("alexnet.reindex", "re-embed the gallery with another model"),
    "gallery": (
        "alexnet.gallery",
        "work on a whole gallery: copy it between folders and PostgreSQL (resumable, verified)",
    ),
}


class RankFilter(logging.Filter):
    """Under torchrun only rank 0 logs below WARNING, so N processes do not print N copies.

    The rank is torchrun's RANK variable (what turns DDP on, `training.distributed`), read
    without importing torch: every command sets up logging, `alexnet serve` included.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or os.environ.get("RANK", "0") == "0"


def setup_logging(level: int = logging.INFO) -> None:
    """One log format for every command; under torchrun only rank 0 logs."""
    handler = logging.StreamHandler()
    handler.addFilter(RankFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # faiss.loader: which SIMD build it tried (AVX512, AVX2, ...) and why each one it lacks
    # failed, at INFO, on every start
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "onnxruntime", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alexnet",
        description="AlexNet (Krizhevsky et al., 2012): train, evaluate, export and serve.",
        epilog="Run `alexnet COMMAND --help` for the options of each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def load_command(name: str):
    """The module of a subcommand; a clear error where its package is not installed."""
    try:
        return importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as e:
        if e.name not in ("torch", "torchvision", "training", "onnx", "matplotlib"):
            raise
        raise SystemExit(
            f"alexnet {name} needs the training packages ({e.name} is not installed): "
            "pip install 'alexnet-service[train]', or use the train image"
        ) from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help or a usage error naming the valid commands
        return 2
    module = load_command(argv[0])
    args = module.get_args_parser().parse_args(argv[1:])
    setup_logging()
    try:
        result = module.main(args)
    except UsageError as e:
        print(f"alexnet {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        logging.getLogger("alexnet").error("%s", e)
        return 1
    return getattr(result, "exit_code", 0)
