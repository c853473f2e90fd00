"""The store's model run in this process: the service's decode (with the settings' limits),
one engine call per batch of files, and the service's top-k.

    predictor = LocalPredictor(settings, batch_size=8)
    for outcome in predictor.predict(files, top_k=5):
        ...
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from alexnet.predicting import Outcome
from service import indexing
from service.config import Settings
from service.decode import ImageError, ImageTooLargeError, decode
from service.routers.predict import top_k as top_k_of


def read_image(path: Path, settings: Settings) -> np.ndarray:
    """The 256x256 input of an image file, decoded as the service decodes an upload.

    Raises:
        OSError: the file cannot be read.
        ImageError: it is empty, too large, not an accepted image, or corrupt.
    """
    size = path.stat().st_size
    if size > settings.max_image_bytes:  # refused before its bytes are read, as uploads are
        raise ImageTooLargeError(
            f"the image is {size} bytes; the limit is {settings.max_image_bytes}"
        )
    data = path.read_bytes()
    pixels, _ = decode(
        data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
    )
    return pixels


def read_error(e: OSError) -> str:
    """Why a file could not be read, in a few words."""
    return f"cannot read it: {e.strerror or e}"


class LocalPredictor:
    """The settings' model (ALEXNET_MODEL or the store's only one, at their precision and
    device), loaded once.

    Args:
        settings: the model, the device and the decode limits.
        batch_size: images per engine call.

    Raises:
        FileNotFoundError: no such model (or the store holds none, or several and none named).
        ModelLoadError: the model file is corrupt or off the contract.
    """

    def __init__(self, settings: Settings, *, batch_size: int = 8) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.engine = indexing.engine_for(settings)

    @property
    def model(self) -> str:
        return self.engine.loaded.id

    @property
    def where(self) -> str:
        loaded = self.engine.loaded
        return f"{loaded.id} ({loaded.precision}, {loaded.provider}) in this process"

    def predict(self, files: Sequence[Path], *, top_k: int) -> Iterator[Outcome]:
        """One outcome per file, in order; a batch's outcomes come after its engine call."""
        labels = self.engine.loaded.manifest.labels
        for start in range(0, len(files), self.batch_size):
            chunk = files[start : start + self.batch_size]
            pixels: dict[int, np.ndarray] = {}
            reasons: dict[int, str] = {}
            for i, path in enumerate(chunk):
                try:
                    pixels[i] = read_image(path, self.settings)
                except ImageError as e:
                    reasons[i] = e.detail
                except OSError as e:
                    reasons[i] = read_error(e)
            rows: dict[int, np.ndarray] = {}
            if pixels:
                probs, _ = self.engine.run(np.stack(list(pixels.values())))
                rows = dict(zip(pixels, probs, strict=True))
            for i, path in enumerate(chunk):
                if i in rows:
                    found = [p.model_dump() for p in top_k_of(rows[i], labels, top_k)]
                    yield Outcome(path, predictions=found)
                else:
                    yield Outcome(path, reason=reasons[i])
