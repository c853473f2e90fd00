"""`alexnet index FOLDER`: add a folder of images to the gallery, offline.

    alexnet index data/synth/val --label-from-folder --model synth

A folder gallery is opened exclusively: stop the service first (or use POST /gallery). A
postgresql:// gallery can be filled while replicas serve it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alexnet.args import add_model_arguments, settings_from
from core.imaging import find_images
from service import indexing
from service.gallery import shown


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alexnet index",
        description="Add every image under FOLDER (recursively) to the gallery, in batches "
        "through the engine.",
    )
    p.add_argument("folder", type=Path, help="folder of images")
    p.add_argument(
        "--label-from-folder",
        action="store_true",
        help="label each image with its parent folder's name",
    )
    p.add_argument("--label", default=None, help="label every image with this")
    p.add_argument("--batch-size", type=int, default=8, help="images per engine call (default: 8)")
    add_model_arguments(p)
    return p


def main(args: argparse.Namespace) -> list[str]:
    paths = find_images(args.folder)
    settings = settings_from(args)
    engine = indexing.engine_for(settings)
    with indexing.open_gallery(settings, engine) as gallery:
        ids, skipped = indexing.index_images(
            gallery, engine, paths, settings=settings, batch_size=args.batch_size,
            label_of=(lambda p: p.parent.name) if args.label_from_folder else lambda _: args.label,
        )  # fmt: skip
        total = len(gallery)
    where = shown(settings.gallery)
    print(f"added {len(ids)} images to {where} ({total} items now); {skipped} skipped")
    return ids
