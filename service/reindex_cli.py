"""`alexnet reindex`: re-embed the stored gallery images with another model.

    alexnet reindex --model synth:2

A gallery records the model (sha256) that made its vectors and refuses to open with
another; this command switches it, in one transaction. Stop the service first.
"""

from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from service.gallery import Gallery, stored_model
from service.index_cli import decode_file, engine_from
from service.serve_cli import add_model_arguments


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
    settings, engine = engine_from(args)
    recorded = stored_model(settings.gallery)
    if recorded is None:
        raise FileNotFoundError(f"no gallery at {settings.gallery}")
    binding = engine.loaded.gallery_binding()
    if recorded.model_sha256 == binding["model_sha256"]:
        print(f"{settings.gallery} is already embedded with {binding['model_id']}; nothing to do")
        return 0
    with Gallery.open(
        settings.gallery,
        model_sha256=recorded.model_sha256,
        model_id=recorded.model_id,
        exact_max=settings.gallery_exact_max,
    ) as g:
        stored = list(g.iter_images())
        vectors = {}
        for start in tqdm(
            range(0, len(stored), args.batch_size), desc="re-embedding", unit="batch"
        ):
            chunk = stored[start : start + args.batch_size]
            pixels = []
            for _, path in chunk:
                decoded = decode_file(path, settings)
                if decoded is None:
                    raise ValueError(
                        f"stored image {path} can no longer be decoded; gallery unchanged"
                    )
                pixels.append(decoded[1])
            _, fc7 = engine.run(np.stack(pixels))
            vectors.update({item_id: v for (item_id, _), v in zip(chunk, fc7, strict=True)})
        g.replace_vectors(vectors, **binding)
    print(
        f"re-embedded {len(vectors)} images of {settings.gallery} with {binding['model_id']} "
        f"(was {recorded.model_id})"
    )
    return len(vectors)
