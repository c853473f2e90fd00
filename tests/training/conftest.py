"""Prepared sets (`alexnet prepare`) of the generated image set, and shared training checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import train_args
from training.checkpoint import load_checkpoint
from training.prepare import prepare


def build_prepared(src: Path, dst: Path, *, encoding: str = "raw", per_shard: int = 5) -> Path:
    """`alexnet prepare` of `src` into `dst`, `per_shard` images a shard."""
    prepare(src, dst, encoding=encoding, shard_size=per_shard, workers=1, progress=False)
    return dst


@pytest.fixture(scope="session")
def prepared_raw(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synth_root` prepared with raw encoding: 36 training images in 8 shards, 12 val in 3."""
    return build_prepared(synth_root, tmp_path_factory.mktemp("prepared") / "raw")


@pytest.fixture(scope="session")
def prepared_jpeg(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synth_root` prepared with JPEG encoding, same shards as `prepared_raw`."""
    return build_prepared(synth_root, tmp_path_factory.mktemp("prepared") / "jpeg",
                          encoding="jpeg")  # fmt: skip


def check_resume_is_exact(data: Path, out: Path) -> tuple[dict, dict]:
    """Train 2 epochs straight, and 1 epoch + resume 1 more; assert the two runs are identical.

    Returns:
        the straight run's and the resumed run's last checkpoints.
    """
    from training.train import train

    common = ["--arch", "paper", "--batch-size", "12", "--seed", "7"]
    train(train_args(data, out / "straight", *common, "--epochs", "2"))
    train(train_args(data, out / "stopped", *common, "--epochs", "1"))
    train(train_args(data, out / "stopped", *common, "--epochs", "2",
                    "--resume", str(out / "stopped" / "checkpoint.pt")))  # fmt: skip
    a = load_checkpoint(out / "straight" / "checkpoint.pt")
    b = load_checkpoint(out / "stopped" / "checkpoint.pt")
    assert b["epoch"] == 1 and len(b["metrics"]) == 2
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    mom_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    mom_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(mom_a, mom_b, strict=True))
    assert [r["val_top1_err"] for r in a["metrics"]] == [r["val_top1_err"] for r in b["metrics"]]
    return a, b


def train_two_processes(data: Path, out: Path, *extra: str) -> str:
    """`alexnet train` under torchrun, two ranks on CPU (gloo); returns its log (stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "alexnet", "train", "--data", str(data), "--output", str(out), "--arch", "paper",
           "--device", "cpu", "--workers", "0", "--no-progress", *extra]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=600, cwd=Path(__file__).parents[2]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "processes=2" in proc.stderr
    assert "all 2 ranks hold identical weights" in proc.stderr
    return proc.stderr
