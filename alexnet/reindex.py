"""`alexnet reindex`: re-embed the stored gallery images with another model.

    alexnet reindex --model synth:2

A gallery records the model (sha256) that made its vectors and refuses to open with
another; this command switches it, in one transaction. Stop the service first (a folder
is locked while served; replicas of a database gallery refuse it until restarted with the
new model).
"""

from __future__ import annotations

import argparse

from alexnet.args import add_model_arguments, settings_from
from service import indexing
from service.gallery import shown


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet reindex",
        description="Re-embed every stored gallery image with the given model and switch the "
        "gallery to it (its vectors are never mixed with another model's).",
    )
    p.add_argument("--batch-size", type=int, default=8, help="images per engine call (default: 8)")
    add_model_arguments(p)
    return p


def main(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    engine = indexing.engine_for(settings)
    count, before = indexing.reindex(settings, engine, batch_size=args.batch_size)
    model_id = engine.loaded.gallery_binding()["model_id"]
    if count is None:
        print(f"{shown(settings.gallery)} is already embedded with {model_id}; nothing to do")
        return 0
    where = shown(settings.gallery)
    print(f"re-embedded {count} images of {where} with {model_id} (was {before.model_id})")
    return count
