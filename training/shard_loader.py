"""Batches of a prepared set (`training.shards`): every rank and loader worker reads its own shards.

Training, each epoch, from (seed, epoch) alone:
- one permutation of the split's shards, the same on every rank; rank r of W takes every
  W-th shard of it from the r-th, and worker w of K (of that rank) every K-th of those
  from the w-th. No process opens another's shards.
- each worker reads its shards a few at a time, drawing the next sample from one of the
  open shards at random, through a shuffle buffer seeded from (seed, epoch, rank, worker).
- each worker yields a whole number of per-rank batches (`quota`), and the ranks are
  trimmed to the smallest rank's number of batches, so every rank takes the same number
  of optimizer steps (DDP would wait forever otherwise). What does not fit is left out
  of that epoch: up to batch-1 images per worker plus the trimmed ranks' surplus, other
  images each epoch since the shards move between ranks and workers.
- so that those leftovers stay small, only as many workers read as the rank's images fill
  `MIN_BATCHES_PER_WORKER` batches each; the others yield nothing that epoch. At ImageNet
  scale every worker reads; on a small set with many workers and a large batch (seen on a
  GPU: 2,400 images, batch 256, 15 workers gave 1 step an epoch instead of 9) fewer do.

Validation: the shards in order, split the same way over ranks and workers, every image
exactly once over all ranks, no shuffling, a last partial batch per worker.

Batches are `training.data.collate_skipping`'s (uint8 (B, 3, 256, 256), int64 (B,), number
skipped). On CUDA with JPEG shards the workers only read bytes and `ShardLoader` decodes
each batch on the GPU (`decode_batch`); elsewhere the workers decode.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from core import constants as C
from training import shards
from training.data import collate_skipping

log = logging.getLogger(__name__)

SHUFFLE_BUFFER = 1000  # samples per worker (JPEG: tens of MB; raw: about 200 MB)
OPEN_SHARDS = 4  # shards a training worker reads at once, so a batch mixes several
# a training worker reads only if the rank's images give each reader this many batches: the
# images left out of an epoch (under a batch per reader) stay under 1/8 of them
MIN_BATCHES_PER_WORKER = 8


@dataclass(frozen=True)
class WorkerPlan:
    shards: tuple[int, ...]  # indexes into the split's shard list, in reading order
    quota: int | None  # samples to yield (None: all of them)


def plan_epoch(
    counts: list[int],
    *,
    seed: int,
    epoch: int,
    world_size: int,
    workers: int,
    batch_size: int,
    shuffle: bool,
) -> list[list[WorkerPlan]]:
    """Who reads which shards in `epoch`, and how many samples each worker yields.

    Args:
        counts: images in each shard of the split.
        seed: the run's seed.
        epoch: the epoch (the shard permutation changes with it).
        world_size: processes (ranks).
        workers: loader workers per rank (at least 1).
        batch_size: the per-rank batch size.
        shuffle: training (permute, quotas in whole batches, equal per rank) or validation
            (in order, everything).

    Returns:
        plans[rank][worker].
    """
    order = list(range(len(counts)))
    # validation reads with every worker; training with as many as its images keep busy
    readers = workers
    if shuffle:
        random.Random(f"shards-{seed}-{epoch}").shuffle(order)
        readers = reading_workers(sum(counts) // world_size, workers, batch_size)
    split = [[order[r::world_size][w::readers] if w < readers else [] for w in range(workers)]
             for r in range(world_size)]  # fmt: skip
    if not shuffle:
        return [[WorkerPlan(tuple(s), None) for s in rank] for rank in split]
    batches = [[sum(counts[i] for i in s) // batch_size for s in rank] for rank in split]
    steps = min(sum(b) for b in batches)
    for rank in batches:  # take the surplus from the fullest workers first
        for _ in range(sum(rank) - steps):
            rank[rank.index(max(rank))] -= 1
    return [
        [WorkerPlan(tuple(s), b * batch_size) for s, b in zip(shards_, bs, strict=True)]
        for shards_, bs in zip(split, batches, strict=True)
    ]


def reading_workers(images: int, workers: int, batch_size: int) -> int:
    """How many of a rank's `workers` read training shards, for `images` per rank: all of
    them when each still gets `MIN_BATCHES_PER_WORKER` batches, else fewer (at least one)."""
    return max(1, min(workers, images // (batch_size * MIN_BATCHES_PER_WORKER)))


class ShardStream(IterableDataset):
    """One split of a prepared set as (image, label) items for this rank.

    Items are (uint8 (3, 256, 256) tensor, or None when the sample cannot be decoded,
    label), or with `decode=False` (the JPEG's bytes as a uint8 tensor, label).

    Args:
        root: the prepared set.
        split: "train" or "val".
        prepared: its `prepared.json`.
        batch_size: the per-rank batch size.
        workers: the DataLoader's workers (0: read in the main process).
        seed: the run's seed.
        rank, world_size: this process and how many there are.
        shuffle: training order (see the module docstring) or the split's order.
        decode: decode in the workers; False leaves it to `decode_batch`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        prepared: shards.PreparedSet,
        *,
        batch_size: int,
        workers: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool,
        decode: bool = True,
    ) -> None:
        if split not in prepared.splits:
            raise ValueError(f"{root} has no split {split!r} (has {sorted(prepared.splits)})")
        self.root, self.split, self.info = Path(root), split, prepared.splits[split]
        self.classes = list(prepared.classes)
        self.batch_size, self.workers, self.seed = batch_size, workers, seed
        self.rank, self.world_size, self.shuffle, self.decode = rank, world_size, shuffle, decode
        self.epoch = 0
        self.opened: list[str] = []  # shard files this process opened, in order (for tests)

    def __len__(self) -> int:
        """Images in the split (all ranks)."""
        return self.info.images

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def plan(self) -> list[WorkerPlan]:
        """This rank's workers' plans for the current epoch."""
        return plan_epoch(self.info.counts, seed=self.seed, epoch=self.epoch,
                          world_size=self.world_size, workers=max(1, self.workers),
                          batch_size=self.batch_size, shuffle=self.shuffle)[self.rank]  # fmt: skip

    def batches(self) -> int:
        """Batches this rank yields in the current epoch."""
        counts = self.info.counts
        return sum(
            math.ceil((p.quota if p.quota is not None else sum(counts[i] for i in p.shards))
                      / self.batch_size)
            for p in self.plan()
        )  # fmt: skip

    def __iter__(self) -> Iterator[tuple[torch.Tensor | None, int]]:
        info = get_worker_info()
        return self.samples(info.id if info is not None else 0)

    def samples(self, worker: int) -> Iterator[tuple[torch.Tensor | None, int]]:
        """The items worker `worker` of this rank yields in the current epoch."""
        plan = self.plan()[worker]
        paths = [self.root / self.split / self.info.shards[i] for i in plan.shards]
        if not self.shuffle:
            stream = _read(paths, self.opened, None, 1)
        else:
            rng = random.Random(f"samples-{self.seed}-{self.epoch}-{self.rank}-{worker}")
            stream = _shuffled(_read(paths, self.opened, rng, OPEN_SHARDS), rng, SHUFFLE_BUFFER)
        for index, data, ext, label in itertools.islice(stream, plan.quota):
            yield self._item(index, data, ext, label)

    def _item(self, index: int, data: bytes, ext: str, label: int):
        if not self.decode:
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), label
        try:
            image = shards.decode(data, ext)
            if image.shape != (3, C.IMAGE_SIZE, C.IMAGE_SIZE):
                raise ValueError(f"decoded to {tuple(image.shape)}, expected (3, 256, 256)")
        except Exception as e:  # noqa: BLE001 - any decoder failure means "skip this sample"
            log.warning("skipping undecodable sample %d of %s/%s: %s", index, self.root,
                        self.split, e)  # fmt: skip
            return None, label
        return image, label


def _read(paths: list[Path], opened: list[str], rng: random.Random | None, at_once: int):
    """The samples of `paths`, `at_once` shards open, the next drawn from one at random."""
    pending, readers = list(paths), []
    while pending or readers:
        while pending and len(readers) < at_once:
            path = pending.pop(0)
            opened.append(path.name)
            readers.append(shards.read_shard(path))
        i = rng.randrange(len(readers)) if rng is not None else 0
        try:
            yield next(readers[i])
        except StopIteration:
            readers.pop(i)


def _shuffled(samples, rng: random.Random, size: int):
    """A shuffle buffer of `size` samples (WebDataset's `shuffle`)."""
    buffer = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = sample
    rng.shuffle(buffer)
    yield from buffer


def collate_encoded(batch: list[tuple[torch.Tensor, int]]):
    """Keep a batch's encoded images, packed end to end in one tensor, for `decode_batch`.

    One tensor, not a list of them: a worker hands each tensor to the main process through
    its own shared-memory segment, and 128 of them a batch cost about 4x the time of the
    reading itself (bytes delivered by 2 workers: 3,100-4,000 images/s as a list, 17,000 as
    one tensor; a loader-bound H200 trained at 2,958 images/s from JPEG shards).

    Returns:
        (uint8 (total bytes,) the JPEG files one after another, int64 (B,) their sizes,
        labels int64 (B,), 0 skipped so far)
    """
    sizes = torch.tensor([len(data) for data, _ in batch], dtype=torch.long)
    packed = torch.cat([data for data, _ in batch]) if batch else torch.empty(0, dtype=torch.uint8)
    return packed, sizes, torch.tensor([lb for _, lb in batch], dtype=torch.long), 0


def decode_batch(batch, device: torch.device):
    """`collate_encoded`'s batch -> `collate_skipping`'s, decoded on `device` in one call.

    JPEGs that cannot be decoded (or not to 256x256) are dropped and counted as skipped.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    packed, sizes, labels, skipped = batch
    data = list(torch.split(packed, sizes.tolist())) if len(sizes) else []
    try:
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device) if data else []
    except RuntimeError:  # one bad file fails the whole call: decode one by one to find it
        images = [_decode_or_none(d, device) for d in data]
    shape = (3, C.IMAGE_SIZE, C.IMAGE_SIZE)
    keep = [i for i, image in enumerate(images) if image is not None and image.shape == shape]
    if len(keep) < len(data):
        log.warning("skipping %d undecodable image(s) of a batch", len(data) - len(keep))
    stacked = (torch.stack([images[i] for i in keep]) if keep
               else torch.empty(0, *shape, dtype=torch.uint8, device=device))  # fmt: skip
    kept = labels[torch.tensor(keep, dtype=torch.long)].to(device, non_blocking=True)
    return stacked, kept, skipped + len(data) - len(keep)


def _decode_or_none(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None


class ShardLoader:
    """A DataLoader over a `ShardStream`, with `set_epoch` and the decoding on the device.

    Workers are started afresh each epoch (not persistent): they get a copy of the stream,
    and a persistent copy would never see `set_epoch`.
    """

    def __init__(self, stream: ShardStream, *, pin_memory: bool, decode_device=None) -> None:
        self.dataset, self.decode_device = stream, decode_device
        self.loader = DataLoader(
            stream,
            batch_size=stream.batch_size,
            num_workers=stream.workers,
            collate_fn=collate_skipping if stream.decode else collate_encoded,
            pin_memory=pin_memory,
        )

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return self.dataset.batches()

    def __iter__(self):
        for batch in self.loader:
            yield batch if self.decode_device is None else decode_batch(batch, self.decode_device)


def make_shard_loader(
    root: str | Path,
    split: str,
    prepared: shards.PreparedSet,
    *,
    batch_size: int,
    workers: int,
    shuffle: bool,
    device: torch.device,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> ShardLoader:
    """The loader of one split for this rank; JPEGs are decoded on `device` when it is CUDA."""
    on_gpu = device.type == "cuda" and prepared.encoding == "jpeg"
    stream = ShardStream(root, split, prepared, batch_size=batch_size, workers=workers,
                         seed=seed, rank=rank, world_size=world_size, shuffle=shuffle,
                         decode=not on_gpu)  # fmt: skip
    return ShardLoader(
        stream, pin_memory=device.type == "cuda", decode_device=device if on_gpu else None
    )


def read_statistics(root: str | Path) -> dict:
    """`stats.npz` as `training.data.pixel_statistics` returns it (float32 tensors)."""
    stats = shards.read_stats(root)
    return {k: v if k == "images" else torch.as_tensor(v, dtype=torch.float32)
            for k, v in stats.items()}  # fmt: skip
