"""`alexnet serve`: run the HTTP service with uvicorn.

    alexnet serve --store model_store --model synth --gallery gallery --port 8000

Every option is also an environment variable (ALEXNET_STORE, ALEXNET_MODEL, ...); an
option given here wins over the variable.
"""

from __future__ import annotations

import argparse

from alexnet.args import add_listen_arguments, add_model_arguments, settings_from


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet serve",
        description="Serve /predict, /similar and /gallery over HTTP (API docs at /docs).",
    )
    add_model_arguments(p)
    add_listen_arguments(p)
    return p


def main(args: argparse.Namespace) -> None:
    from service.app import run

    run(settings_from(args))
