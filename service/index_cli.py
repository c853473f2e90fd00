"""`alexnet index FOLDER`: add a folder of images to the gallery, offline.

    alexnet index data/synth/val --label-from-folder --model synth

It opens the gallery folder exclusively: stop the service first (or use POST /gallery).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.app import default_model
from service.decode import EXTENSIONS, ImageError, decode
from service.engine import Engine
from service.gallery import Gallery, NewItem
from core.model_loader import load_model
from service.serve_cli import add_model_arguments, settings_from
from core.imaging import find_images

log = logging.getLogger(__name__)


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


def engine_from(args: argparse.Namespace):
    settings = settings_from(args)
    loaded = load_model(
        settings.store,
        default_model(settings),
        precision=settings.precision,
        device=settings.device,
        threads=settings.threads,
    )
    return settings, Engine(loaded)


def decode_file(path: Path, settings) -> tuple[bytes, np.ndarray, str] | None:
    data = path.read_bytes()
    try:
        pixels, fmt = decode(
            data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )
    except ImageError as e:
        log.warning("skipping %s: %s", path, e.detail)
        return None
    return data, pixels, fmt


def main(args: argparse.Namespace) -> list[str]:
    paths = find_images(args.folder)
    settings, engine = engine_from(args)
    ids: list[str] = []
    skipped = 0
    with Gallery.open(
        settings.gallery, exact_max=settings.gallery_exact_max, **engine.loaded.gallery_binding()
    ) as gallery:
        bar = tqdm(total=len(paths), desc=f"indexing into {settings.gallery}", unit="img")
        for start in range(0, len(paths), args.batch_size):
            chunk = paths[start : start + args.batch_size]
            decoded = [(p, d) for p in chunk if (d := decode_file(p, settings)) is not None]
            skipped += len(chunk) - len(decoded)
            if decoded:
                _, fc7 = engine.run(np.stack([d[1] for _, d in decoded]))
                items = [
                    NewItem(
                        image_bytes=d[0],
                        image_ext=EXTENSIONS[d[2]],
                        vector=v,
                        label=p.parent.name if args.label_from_folder else args.label,
                        metadata={"source": str(p)},
                    )
                    for (p, d), v in zip(decoded, fc7, strict=True)
                ]
                ids += gallery.add(items)
            bar.update(len(chunk))
        bar.close()
        total = len(gallery)
    print(f"added {len(ids)} images to {settings.gallery} ({total} items now); {skipped} skipped")
    return ids
