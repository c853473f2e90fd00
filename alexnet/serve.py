"""`alexnet serve`: run the HTTP service with uvicorn.

    alexnet serve --store model_store --model synth --gallery gallery --port 8000

Every option is also an environment variable (ALEXNET_STORE, ALEXNET_MODEL, ...); an
option given here wins over the variable. The options are written from the fields of
`service.config.Settings`, so `--help` lists every setting the service reads.
"""

from __future__ import annotations

import argparse

from alexnet.args import add_settings_arguments, settings_from


def get_args_parser() -> argparse.ArgumentParser:
    from service.config import Settings

    p = argparse.ArgumentParser(
        prog="alexnet serve",
        description="Serve /predict, /similar and /gallery over HTTP (API docs at /docs, "
        "also offline). Each option is also an ALEXNET_* environment variable; an option "
        "given wins over the variable.",
    )
    env_only = add_settings_arguments(p)
    p.epilog = "Read only from the environment: " + "; ".join(
        f"ALEXNET_{name.upper()}: {Settings.model_fields[name].description}" for name in env_only
    )
    return p


def main(args: argparse.Namespace) -> None:
    from service.app import run

    run(settings_from(args))
