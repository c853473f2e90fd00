"""Training from a prepared set: the shard split, the seeded order, decoding, `alexnet train`."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.conftest import train_args
from tests.training.conftest import check_resume_is_exact, train_two_processes
from training import shards
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.data import ImageFolder256, collate_skipping, make_loader
from training.evaluate import evaluate
from training.presets import normalize_from
from training.shard_loader import (
    ShardStream,
    collate_encoded,
    decode_batch,
    make_shard_loader,
    plan_epoch,
)
from training.train import train

CPU = torch.device("cpu")


def digest(image: torch.Tensor) -> str:
    return hashlib.sha256(image.numpy().tobytes()).hexdigest()


def split_digests(root: Path, split: str) -> list[str]:
    """Every image of a split, identified by its pixels, in the split's order."""
    files = [root / split / name for name in shards.read_prepared(root).splits[split].shards]
    return [digest(shards.decode(data, ext))
            for path in files for _, data, ext, _ in shards.read_shard(path)]  # fmt: skip


def stream(root: Path, split: str = "train", **kw) -> ShardStream:
    kw = {"batch_size": 3, "workers": 0, "shuffle": split == "train", **kw}
    return ShardStream(root, split, shards.read_prepared(root), **kw)


@pytest.mark.parametrize("world_size,workers", [(1, 1), (2, 1), (2, 3), (3, 4)])
def test_plan_gives_disjoint_shards_and_equal_steps(world_size: int, workers: int) -> None:
    counts = [random.Random(i).randint(20, 60) for i in range(23)]
    for epoch in range(3):
        plans = plan_epoch(counts, seed=5, epoch=epoch, world_size=world_size, workers=workers,
                           batch_size=8, shuffle=True)  # fmt: skip
        read = [s for rank in plans for p in rank for s in p.shards]
        assert sorted(read) == list(range(len(counts)))  # every shard, by exactly one worker
        for rank in plans:
            for p in rank:
                assert p.quota % 8 == 0 and p.quota <= sum(counts[i] for i in p.shards)
        steps = {sum(p.quota for p in rank) // 8 for rank in plans}
        assert len(steps) == 1 and steps.pop() > 0  # the same number of batches on every rank
        val = plan_epoch(counts, seed=5, epoch=epoch, world_size=world_size, workers=workers,
                         batch_size=8, shuffle=False)  # fmt: skip
        assert sorted(s for rank in val for p in rank for s in p.shards) == list(range(len(counts)))
        assert all(p.quota is None for rank in val for p in rank)
    epochs = [plan_epoch(counts, seed=5, epoch=e, world_size=world_size, workers=workers,
                         batch_size=8, shuffle=True) for e in range(2)]  # fmt: skip
    assert epochs[0] != epochs[1]  # the shards move between ranks and workers each epoch


def test_ranks_and_workers_read_only_their_own_shards(prepared_raw: Path) -> None:
    world_size, workers, batch = 2, 2, 3
    every = split_digests(prepared_raw, "train")
    opened, seen, per_rank = [], [], []
    for rank in range(world_size):
        count = 0
        for worker in range(workers):
            s = stream(prepared_raw, batch_size=batch, workers=workers, rank=rank,
                       world_size=world_size)  # fmt: skip
            s.set_epoch(1)
            items = list(s.samples(worker))
            expected = [s.info.shards[i] for i in s.plan()[worker].shards]
            assert s.opened == expected[: len(s.opened)]  # only its own, in order, each once
            opened.append(set(s.opened))
            seen += [digest(image) for image, _ in items]
            assert len(items) % batch == 0
            count += len(items)
        per_rank.append(count)
    assert all(a.isdisjoint(b) for i, a in enumerate(opened) for b in opened[i + 1 :])
    assert len(set(seen)) == len(seen) and set(seen) <= set(every)  # each image at most once
    assert len(set(per_rank)) == 1 and per_rank[0] > 0  # equal batches on both ranks


def test_loader_workers_yield_what_the_plan_says_in_a_fixed_order(prepared_raw: Path) -> None:
    prepared = shards.read_prepared(prepared_raw)
    loader = make_shard_loader(prepared_raw, "train", prepared, batch_size=3, workers=2,
                               shuffle=True, device=CPU, seed=4)  # fmt: skip
    loader.set_epoch(2)
    runs = [[digest(image) for images, _, _ in loader for image in images] for _ in range(2)]
    assert runs[0] == runs[1]
    assert len(runs[0]) == 3 * len(loader)
    in_process = []
    for worker in range(2):
        s = stream(prepared_raw, workers=2, seed=4)
        s.set_epoch(2)
        in_process += [digest(image) for image, _ in s.samples(worker)]
    assert Counter(runs[0]) == Counter(in_process)


def test_order_depends_only_on_seed_and_epoch(prepared_raw: Path) -> None:
    def order(seed: int, epoch: int) -> list[str]:
        s = stream(prepared_raw, seed=seed)
        s.set_epoch(epoch)
        return [digest(image) for image, _ in s.samples(0)]

    first = order(0, 3)
    assert order(0, 3) == first
    assert order(0, 4) != first and order(1, 3) != first
    assert sorted(order(0, 4)) == sorted(first)  # one worker, 36 = 3 x 12: nothing dropped


def test_validation_reads_every_image_once_in_order(prepared_raw: Path) -> None:
    every = split_digests(prepared_raw, "val")
    seen = []
    for rank in range(2):
        for worker in range(2):
            s = stream(prepared_raw, "val", workers=2, rank=rank, world_size=2)
            mine = [digest(image) for image, _ in s.samples(worker)]
            assert mine == sorted(mine, key=every.index)  # the split's order
            seen += mine
    assert sorted(seen) == sorted(every)


def test_device_decode_gives_the_worker_decode_pixels(prepared_jpeg: Path) -> None:
    encoded = list(stream(prepared_jpeg, "val", decode=False).samples(0))
    decoded = list(stream(prepared_jpeg, "val").samples(0))
    images, labels, skipped = decode_batch(collate_encoded(encoded), CPU)
    expected = collate_skipping(decoded)
    assert images.dtype == torch.uint8 and images.shape == (12, 3, 256, 256)
    assert torch.equal(images, expected[0]) and torch.equal(labels, expected[1])
    assert skipped == expected[2] == 0


def test_workers_hand_over_encoded_batches_that_decode_to_the_worker_decode(
    prepared_jpeg: Path,
) -> None:
    # the CUDA path through real worker processes: one packed tensor per batch
    from training.shard_loader import ShardLoader

    encoded = ShardLoader(stream(prepared_jpeg, "val", decode=False, workers=2, batch_size=5),
                          pin_memory=False, decode_device=CPU)  # fmt: skip
    decoded = ShardLoader(stream(prepared_jpeg, "val", workers=2, batch_size=5), pin_memory=False)
    pairs = list(zip(encoded, decoded, strict=True))
    assert sum(len(b[1]) for b, _ in pairs) == 12
    for (images, labels, skipped), expected in pairs:
        assert torch.equal(images, expected[0]) and torch.equal(labels, expected[1])
        assert skipped == expected[2] == 0


def test_undecodable_samples_are_skipped_and_counted(prepared_jpeg: Path, tmp_path: Path) -> None:
    prepared = shards.read_prepared(prepared_jpeg)
    good = list(shards.read_shard(prepared_jpeg / "val" / prepared.splits["val"].shards[0]))
    (tmp_path / "val").mkdir()
    samples = [(i, data, label) for i, data, _, label in good[:3]]
    samples.insert(1, (99, b"\xff\xd8\xff\xe0 truncated", 2))
    shards.write_shard(tmp_path / "val" / "val-000000.tar", samples, "jpeg")
    split = shards.SplitInfo(shards=["val-000000.tar"], counts=[4])
    prepared = prepared.model_copy(update={"splits": {"val": split}})
    items = list(ShardStream(tmp_path, "val", prepared, batch_size=4, workers=0,
                             shuffle=False).samples(0))  # fmt: skip
    images, labels, skipped = collate_skipping(items)
    assert images.shape[0] == 3 and skipped == 1
    encoded = list(ShardStream(tmp_path, "val", prepared, batch_size=4, workers=0, shuffle=False,
                               decode=False).samples(0))  # fmt: skip
    on_device = decode_batch(collate_encoded(encoded), CPU)
    assert torch.equal(on_device[0], images) and torch.equal(on_device[1], labels)
    assert on_device[2] == 1


def test_training_from_prepared_data_matches_the_folders(
    prepared_raw: Path, synth_root: Path, trained_run: Path, tmp_path: Path
) -> None:
    # `trained_run` is the folder run with these options (tests/conftest.py).
    train(train_args(prepared_raw, tmp_path, "--arch", "bn", "--epochs", "2", "--batch-size", "12"))
    folder = load_checkpoint(trained_run / "checkpoint.pt")
    prepared = load_checkpoint(tmp_path / "checkpoint.pt")
    # Raw shards hold the folder run's pixels and stats.npz its statistics, exactly.
    assert prepared["labels"] == folder["labels"]
    assert torch.equal(prepared["normalization"]["mean"], folder["normalization"]["mean"])
    assert torch.equal(prepared["pca"]["eigvec"], folder["pca"]["eigvec"])
    assert prepared["config"].keys() == folder["config"].keys()
    s = stream(prepared_raw, batch_size=12)
    epoch = Counter(digest(image) for image, _ in s.samples(0))
    train_set = ImageFolder256(synth_root / "train")
    assert epoch == Counter(digest(train_set[i][0]) for i in range(len(train_set)))
    # So one model scores the same on both validation loaders, to the last image...
    model, normalize = model_from_checkpoint(folder), normalize_from(folder["normalization"])
    loaders = [
        make_loader(ImageFolder256(synth_root / "val", classes=folder["labels"]), batch_size=5,
                    workers=0, shuffle=False),
        make_shard_loader(prepared_raw, "val", shards.read_prepared(prepared_raw), batch_size=5,
                          workers=0, shuffle=False, device=CPU),
    ]  # fmt: skip
    scores = [evaluate(model, loader, normalize, 227, device=CPU, progress=False)
              for loader in loaders]  # fmt: skip
    assert scores[0] == scores[1]
    # ...and the two runs differ only in the order of the same images (the sampler's vs the
    # shard permutation and buffer), so their figures agree within the noise of two short
    # runs on 12 validation images: a bound of 6 images catches a broken pipeline (labels
    # shuffled against images, a wrong mean), not a difference of order.
    for a, b in zip(folder["metrics"], prepared["metrics"], strict=True):
        assert abs(a["val_top1_err"] - b["val_top1_err"]) <= 6 / 12
        assert abs(a["train_loss"] - b["train_loss"]) < 1.0


def test_resume_on_prepared_data_continues_exactly(prepared_raw: Path, tmp_path: Path) -> None:
    check_resume_is_exact(prepared_raw, tmp_path)


def test_too_few_images_for_a_batch_fails_before_training(
    prepared_raw: Path, tmp_path: Path
) -> None:
    # 36 training images, 18 a process: no whole batch of 20 for either of them
    with pytest.raises(ValueError, match="no whole batch"):
        train(train_args(prepared_raw, tmp_path, "--batch-size", "40", "--workers", "8"))
    assert not (tmp_path / "checkpoint.pt").exists()


def steps_and_readers(counts: list[int], world_size: int, workers: int, batch: int):
    plans = plan_epoch(counts, seed=0, epoch=0, world_size=world_size, workers=workers,
                       batch_size=batch, shuffle=True)  # fmt: skip
    steps = {sum(p.quota for p in rank) // batch for rank in plans}
    readers = {sum(1 for p in rank if p.shards) for rank in plans}
    assert len(steps) == 1 and len(readers) == 1
    return steps.pop(), readers.pop()


def test_more_workers_than_a_small_set_feeds_still_use_nearly_every_image() -> None:
    # Seen on a GPU: 2,400 images in 16 shards, batch 256, 15 workers. Each worker yields whole
    # batches of its own shards, so 14 workers with 150 images gave nothing: 1 step an epoch.
    steps, readers = steps_and_readers([150] * 16, world_size=1, workers=15, batch=256)
    assert (steps, readers) == (2400 // 256, 1)
    steps, readers = steps_and_readers([150] * 16, world_size=1, workers=8, batch=128)
    assert steps >= 7 / 8 * 2400 / 128 and readers == 2
    # ImageNet, 1,281,167 images in 1,000-image shards, 8 processes x 8 workers, batch 128 each:
    # every worker reads, and under 1% of the images are left out of an epoch
    counts = [1000] * 1281 + [167]
    steps, readers = steps_and_readers(counts, world_size=8, workers=8, batch=128)
    assert readers == 8 and sum(counts) - steps * 128 * 8 < 0.01 * sum(counts)


def test_a_small_prepared_set_with_many_workers_trains_every_batch(
    prepared_raw: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="training")
    train(
        train_args(prepared_raw, tmp_path, "--batch-size", "6", "--workers", "4", "--epochs", "1")
    )
    assert "6 batches of 6 per process per epoch, read by 1 worker(s)" in caplog.text
    assert "0 training image(s) left out" in caplog.text


def test_two_process_ddp_on_prepared_data(prepared_raw: Path, tmp_path: Path) -> None:
    log = train_two_processes(prepared_raw, tmp_path, "--epochs", "2", "--batch-size", "6")
    assert "batches of 3 per process" in log
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    for row in ckpt["metrics"]:  # every validation image counted exactly once over the ranks
        assert round(row["val_top1_err"] * 12) == pytest.approx(row["val_top1_err"] * 12)
