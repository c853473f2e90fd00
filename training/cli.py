"""`alexnet`: one command with a subcommand per job.

Each subcommand's module owns its parser (`get_args_parser`) and `main(args)`; this file
only wires them, importing a module when its subcommand runs so `alexnet --help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": (
        "training.quickstart",
        "serve the store's model, first building the built-in default if the store is empty",
    ),
    "synth": ("training.synth_cli", "write a procedurally drawn, labelled image set"),
    "train": ("training.train", "train AlexNet on a class-per-folder image set"),
    "evaluate": ("training.evaluate", "top-1/top-5 error with one centre crop and with ten crops"),
    "export": ("training.export", "export a checkpoint to the model store as verified ONNX"),
    "import-torchvision": (
        "training.import_torchvision",
        "make a store model from torchvision's ImageNet AlexNet weights",
    ),
    "quantize": ("training.quantize", "add int8 (CPU) and fp16 (CUDA) files to a store version"),
    "plot": ("training.plot_cli", "draw a run's training curves (loss, error, lr) as a PNG"),
    "filters": ("training.filters_cli", "draw the conv1 kernels as an image grid (Figure 3)"),
    "models": ("service.models_cli", "list the models in the store"),
    "serve": ("service.serve_cli", "run the HTTP service (predict, similar, gallery)"),
    "index": ("service.index_cli", "add a folder of images to the gallery"),
    "reindex": ("service.reindex_cli", "re-embed the gallery with another model"),
}


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    try:  # the serving image has no torch; then there are no ranks either
        from training.distributed import RankFilter

        handler.addFilter(RankFilter())
    except ImportError:
        pass
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "onnxruntime"):
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help or a usage error naming the valid commands
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    args = module.get_args_parser().parse_args(argv[1:])
    setup_logging()
    try:
        module.main(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        logging.getLogger("alexnet").error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
