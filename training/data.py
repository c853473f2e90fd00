"""Class-per-folder image sets, decoded to the paper's 256x256 input.

    root/train/<class>/*     root/val/<class>/*

Every file in a class folder is an item, whatever its name: what it holds decides, as in
the service, which reads the same formats (`core.constants.ACCEPTED_FORMATS`: JPEG, PNG, GIF
(the first frame), WebP, TIFF, BMP). Files that cannot be decoded, or hold another format,
are skipped and counted (a warning names each one), never a crash mid-epoch and never left
out unsaid. Hidden files (.DS_Store, ._name) are left out, counted in one line. An empty or
malformed folder fails before training starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.datasets import ImageFolder
from tqdm import tqdm

from core import constants as C
from core.imaging import is_image_file, load_256

log = logging.getLogger(__name__)


class ImageFolder256(Dataset):
    """A class-per-folder set whose items are (uint8 (3, 256, 256) tensor or None, label).

    Args:
        root: the folder holding one sub-folder per class.
        classes: the expected class names in label order (e.g. the training set's); the
            folder must have exactly these.
    """

    def __init__(self, root: str | Path, classes: list[str] | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a folder (expected {root}/<class>/<images>)")
        hidden: list[str] = []

        def is_item(path: str) -> bool:
            if Path(path).name.startswith("."):
                hidden.append(path)
                return False
            return True

        try:
            # torchvision scans the class folders; we decode ourselves (load_256, shared with
            # the service), so the loader only has to return the path.
            self.folder = ImageFolder(str(root), loader=str, is_valid_file=is_item)
        except (FileNotFoundError, RuntimeError) as e:
            raise ValueError(
                f"{root} is not a class-per-folder image set: {e}. Expected {root}/<class>/<image>"
                f" (images in {', '.join(sorted(C.ACCEPTED_FORMATS))})"
            ) from None
        if hidden:
            log.info("%s: left out %d hidden file(s), e.g. %s", root, len(hidden), hidden[0])
        if unlikely := [p for p, _ in self.folder.samples if not is_image_file(p)]:
            log.info("%s: %d file(s) without an image suffix, read by content (e.g. %s)",
                     root, len(unlikely), unlikely[0])  # fmt: skip
        if len(self.folder.classes) < 2:
            raise ValueError(
                f"{root} has {len(self.folder.classes)} class folder(s); need at least 2"
            )
        if classes is not None and self.folder.classes != list(classes):
            missing = sorted(set(classes) - set(self.folder.classes))
            extra = sorted(set(self.folder.classes) - set(classes))
            raise ValueError(
                f"{root} has different classes than the training set "
                f"(missing: {missing or 'none'}, unexpected: {extra or 'none'})"
            )
        self.root = root
        self.classes: list[str] = self.folder.classes
        self.targets: list[int] = self.folder.targets

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int]:
        path, label = self.folder.samples[index]
        try:
            image = load_256(path)
        except Exception as e:  # noqa: BLE001 - any decoder failure means "skip this file"
            log.warning("skipping unreadable image %s: %s", path, e)  # counted by the collate
            return None, label
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), label  # (3, 256, 256)


def collate_skipping(batch: list[tuple[torch.Tensor | None, int]]):
    """Stack a batch, dropping unreadable items.

    Returns:
        (images uint8 (B, 3, 256, 256), labels int64 (B,), number of items skipped)
    """
    kept = [(img, label) for img, label in batch if img is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return (
            torch.empty(0, 3, C.IMAGE_SIZE, C.IMAGE_SIZE, dtype=torch.uint8),
            torch.empty(0, dtype=torch.long),
            skipped,
        )
    images, labels = zip(*kept, strict=True)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), skipped


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    workers: int,
    shuffle: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over `dataset` split across `world_size` ranks.

    Shuffling comes from a DistributedSampler seeded with `seed` (call `set_epoch` each
    epoch), also on one process, so the order depends only on (seed, epoch): a resumed run
    sees the same batches as an uninterrupted one. Without shuffling, each rank takes
    every world_size-th image, with no repeats.
    """
    if shuffle:
        sampler = DistributedSampler(
            dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=drop_last,
        )
    else:
        # Every image exactly once over all ranks (DistributedSampler would pad with repeats,
        # which skews evaluation figures).
        sampler = list(range(rank, len(dataset), world_size))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skipping,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=workers > 0,
    )


def pixel_statistics(
    dataset: ImageFolder256,
    *,
    max_images: int | None = None,
    workers: int = 0,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """The mean image and the RGB covariance eigen-decomposition of a training set.

    The paper subtracts "the mean activity over the training set from each pixel" (a
    256x256x3 mean image) and draws its colour augmentation from the principal
    components of the RGB pixel values. Both come from one pass over the images (a
    random subset of `max_images` if given). Values are in 0..255 units.

    Returns:
        {"mean": (3, 256, 256) float32, "eigval": (3,), "eigvec": (3, 3) columns,
         "images": number of images used}
    """
    indices = np.arange(len(dataset))
    if max_images is not None and max_images < len(indices):
        indices = np.sort(np.random.default_rng(seed).choice(indices, max_images, replace=False))
    loader = DataLoader(
        torch.utils.data.Subset(dataset, indices.tolist()),
        batch_size=64,
        num_workers=workers,
        collate_fn=collate_skipping,
    )
    total = torch.zeros(3, C.IMAGE_SIZE, C.IMAGE_SIZE, dtype=torch.float64)
    moment = torch.zeros(3, 3, dtype=torch.float64)  # sum of x x^T over all pixels
    count = 0
    for images, _, _ in tqdm(
        loader, desc="mean image + RGB PCA", disable=not progress, unit="batch"
    ):
        x = images.to(torch.float64)  # (B, 3, 256, 256)
        total += x.sum(0)
        pixels = x.permute(1, 0, 2, 3).reshape(3, -1)
        moment += pixels @ pixels.T
        count += x.shape[0]
    if count == 0:
        raise ValueError(f"no readable image in {dataset.root}")
    return statistics_from_sums(total, moment, count)


def statistics_from_sums(
    total: torch.Tensor, moment: torch.Tensor, count: int
) -> dict[str, torch.Tensor]:
    """The mean image and RGB PCA from the sums of one pass (also `alexnet prepare`'s).

    Args:
        total: (3, 256, 256) float64, the sum of the images.
        moment: (3, 3) float64, the sum of x x^T over every pixel x (RGB).
        count: the number of images.
    """
    mean = total / count
    channel_mean = mean.mean(dim=(1, 2))
    cov = moment / (count * C.IMAGE_SIZE**2) - torch.outer(channel_mean, channel_mean)
    eigval, eigvec = torch.linalg.eigh(cov)  # ascending
    order = eigval.argsort(descending=True)
    return {
        "mean": mean.float(),
        "eigval": eigval[order].clamp_min(0).float(),
        "eigvec": eigvec[:, order].float(),
        "images": count,
    }
