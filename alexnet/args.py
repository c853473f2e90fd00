"""Arguments that several commands share, defined once."""

from __future__ import annotations

import argparse
from pathlib import Path

from core import constants as C


class UsageError(ValueError):
    """A command line that cannot run (nothing to work on, an unknown model): `alexnet` exits
    with status 2, as argparse does for a bad option."""


def add_store_argument(p: argparse.ArgumentParser) -> None:
    """`--store DIR`, the same in every command that reads or writes the store."""
    p.add_argument(
        "--store",
        type=Path,
        default=Path(C.STORE_DIR),
        help=f"store folder (default: {C.STORE_DIR})",
    )


def add_publish_arguments(p: argparse.ArgumentParser) -> None:
    """--name, --version and --store: where a new model version goes."""
    p.add_argument("--name", required=True, help="model name in the store")
    p.add_argument(
        "--version", type=int, default=None, help="version number (default: the next free integer)"
    )
    add_store_argument(p)


def add_model_arguments(p: argparse.ArgumentParser, *, gallery: bool = True) -> None:
    """Where the served model and the gallery come from (serve, index, reindex, quickstart;
    predict, which needs no gallery, with `gallery=False`).

    Every one defaults to None, so that the ALEXNET_* variable (or the setting's default)
    applies unless the option is given: see `settings_from`.
    """
    p.add_argument(
        "--store", type=Path, default=None, help="model store (ALEXNET_STORE; default: model_store)"
    )
    p.add_argument(
        "--model",
        default=None,
        help="NAME[:VERSION] (ALEXNET_MODEL; default: the only model in the store)",
    )
    if gallery:
        p.add_argument(
            "--gallery",
            default=None,
            metavar="FOLDER_OR_URL",
            help="gallery: a folder (embedded, one process) or a postgresql:// URL (shared by "
            "replicas) (ALEXNET_GALLERY; default: gallery)",
        )
    p.add_argument(
        "--precision",
        default=None,
        help="auto, fp32, fp16 or int8 (ALEXNET_PRECISION; default: auto)",
    )
    p.add_argument(
        "--device", default=None, help="auto, cuda or cpu (ALEXNET_DEVICE; default: auto)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="onnxruntime threads (ALEXNET_THREADS)"
    )


def add_listen_arguments(p: argparse.ArgumentParser) -> None:
    """--host and --port of the HTTP service (serve, quickstart)."""
    p.add_argument(
        "--host", default=None, help="address to listen on (ALEXNET_HOST; default: 127.0.0.1)"
    )
    p.add_argument("--port", type=int, default=None, help="port (ALEXNET_PORT; default: 8000)")


def settings_from(args: argparse.Namespace):
    """The service's Settings: ALEXNET_* variables, overridden by the options given."""
    from service.config import Settings

    given = {k: v for k, v in vars(args).items() if v is not None and k in Settings.model_fields}
    return Settings(**given)
