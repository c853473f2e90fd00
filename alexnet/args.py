"""Arguments that several commands share, defined once."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import UnionType
from typing import Literal, Union, get_args, get_origin

from pydantic import SecretStr

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


# The settings `add_model_arguments` and `add_listen_arguments` offer, in this order.
MODEL_SETTINGS = ("store", "model", "gallery", "precision", "device", "threads")
LISTEN_SETTINGS = ("host", "port")


def add_settings_arguments(
    p: argparse.ArgumentParser, names: tuple[str, ...] | None = None
) -> list[str]:
    """One option per field of the service's Settings (all of them, or `names`), written from
    the field itself: `--max-batch` for `max_batch`, with its description, its environment
    variable ALEXNET_MAX_BATCH, its default and its choices, so help and settings cannot drift.

    Every option defaults to None, so that the ALEXNET_* variable (or the setting's default)
    applies unless the option is given: see `settings_from`. Secrets (the API key) get no
    option, since a command line is visible to every user of the machine; they are returned.

    Returns:
        the names of the settings read only from the environment.
    """
    from service.config import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    env_only = []
    for name in names or tuple(Settings.model_fields):
        field = Settings.model_fields[name]
        env = f"{prefix}{name}".upper()
        kind = _option_type(field.annotation)
        if kind is SecretStr:
            env_only.append(name)
            continue
        said = f"{env}" if field.default is None else f"{env}; default: {field.default}"
        choices = list(get_args(kind)) if get_origin(kind) is Literal else None
        p.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=str if choices else kind,
            choices=choices,
            default=None,
            metavar=None if choices else _metavar(name, kind),
            help=f"{field.description} ({said})".replace("%", "%%"),
        )
    return env_only


def _option_type(annotation):
    """The type of a setting without its `| None`."""
    if get_origin(annotation) in (Union, UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    return annotation


def _metavar(name: str, kind) -> str:
    if name == "gallery":
        return "FOLDER_OR_URL"
    return {Path: "DIR", int: "N", float: "X"}.get(kind, name.upper())


def add_model_arguments(p: argparse.ArgumentParser, *, gallery: bool = True) -> None:
    """Where the served model and the gallery come from (serve, index, reindex, quickstart;
    predict, which needs no gallery, with `gallery=False`)."""
    add_settings_arguments(p, tuple(n for n in MODEL_SETTINGS if gallery or n != "gallery"))


def add_listen_arguments(p: argparse.ArgumentParser) -> None:
    """--host and --port of the HTTP service (serve, quickstart)."""
    add_settings_arguments(p, LISTEN_SETTINGS)


def settings_from(args: argparse.Namespace):
    """The service's Settings: ALEXNET_* variables, overridden by the options given."""
    from service.config import Settings

    given = {k: v for k, v in vars(args).items() if v is not None and k in Settings.model_fields}
    return Settings(**given)
