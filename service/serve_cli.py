"""`alexnet serve`: run the HTTP service with uvicorn.

    alexnet serve --store model_store --model synth --gallery gallery --port 8000

Every option is also an environment variable (ALEXNET_STORE, ALEXNET_MODEL, ...); an
option given here wins over the variable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from service.config import Settings


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Where the model and the gallery come from (shared by serve, index and reindex)."""
    p.add_argument(
        "--store", type=Path, default=None, help="model store (ALEXNET_STORE; default: model_store)"
    )
    p.add_argument(
        "--model",
        default=None,
        help="NAME[:VERSION] (ALEXNET_MODEL; default: the only model in the store)",
    )
    p.add_argument(
        "--gallery",
        type=Path,
        default=None,
        help="gallery folder (ALEXNET_GALLERY; default: gallery)",
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


def settings_from(args: argparse.Namespace) -> Settings:
    """ALEXNET_* variables, overridden by the options given on the command line."""
    given = {k: v for k, v in vars(args).items() if v is not None and k in Settings.model_fields}
    return Settings(**given)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet serve",
        description="Serve /predict, /similar and /gallery over HTTP (API docs at /docs).",
    )
    add_model_arguments(p)
    p.add_argument(
        "--host", default=None, help="address to listen on (ALEXNET_HOST; default: 127.0.0.1)"
    )
    p.add_argument("--port", type=int, default=None, help="port (ALEXNET_PORT; default: 8000)")
    return p


def main(args: argparse.Namespace) -> None:
    import uvicorn

    from service.app import create_app

    settings = settings_from(args)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
