"""`alexnet train`: checkpoints, metrics, exact resume, refusal to overwrite, DDP on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_CLASSES, train_args
from tests.training.conftest import check_resume_is_exact, train_two_processes
from training.checkpoint import load_checkpoint
from training.presets import Normalize
from training.train import CPU_BF16_FEATURES, train

CONTRACT_KEYS = {"model", "arch", "num_classes", "labels", "crop_size", "normalization", "epoch",
                 "optimizer", "scheduler", "metrics"}  # fmt: skip


def test_checkpoint_holds_what_the_contract_asks(trained_run: Path, synth_root: Path) -> None:
    ckpt = load_checkpoint(trained_run / "checkpoint.pt")
    assert CONTRACT_KEYS <= ckpt.keys()
    assert ckpt["arch"] == "bn" and ckpt["crop_size"] == 227 and ckpt["epoch"] == 1
    assert ckpt["num_classes"] == TINY_CLASSES
    assert ckpt["labels"] == sorted(p.name for p in (synth_root / "train").iterdir())
    assert ckpt["normalization"]["mean"].shape == (3, 256, 256)
    assert ckpt["config"]["epochs"] == 2 and ckpt["config"]["batch_size"] == 12
    Normalize(
        ckpt["normalization"]["mean"], ckpt["normalization"]["std"]
    )  # export needs nothing else
    assert (trained_run / "best.pt").exists()


def test_metrics_file_has_one_row_per_epoch(trained_run: Path) -> None:
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    for r in rows:
        assert {"train_loss", "val_top1_err", "val_top5_err", "lr", "images_per_s"} <= r.keys()
        assert 0 <= r["val_top1_err"] <= 1 and r["images_per_s"] > 0 and r["lr"] == 0.01
    assert rows == load_checkpoint(trained_run / "checkpoint.pt")["metrics"]


def test_best_checkpoint_is_the_epoch_with_lowest_val_error(trained_run: Path) -> None:
    rows = load_checkpoint(trained_run / "checkpoint.pt")["metrics"]
    best_epoch = min(rows, key=lambda r: r["val_top1_err"])["epoch"]  # first of equals
    assert load_checkpoint(trained_run / "best.pt")["epoch"] == best_epoch


def test_refuses_to_overwrite_a_run_without_resume(trained_run: Path, synth_root: Path) -> None:
    before = (trained_run / "checkpoint.pt").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="--resume"):
        train(train_args(synth_root, trained_run, "--arch", "bn", "--epochs", "3"))
    assert (trained_run / "checkpoint.pt").stat().st_mtime_ns == before


def test_resume_continues_exactly(synth_root: Path, tmp_path: Path) -> None:
    a, _ = check_resume_is_exact(synth_root, tmp_path)
    # and the weights did move: this is a real training run
    c = load_checkpoint(tmp_path / "stopped" / "best.pt")
    assert any(not torch.equal(t, a["model"][k]) for k, t in c["model"].items()) or c["epoch"] == 1


def test_unreadable_files_are_skipped_during_training(synth_root: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    cls = sorted((data / "train").iterdir())[1]
    (cls / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    train(train_args(data, tmp_path / "run", "--arch", "bn", "--epochs", "1", "--batch-size", "12"))
    rows = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["metrics"]
    assert rows[0]["skipped_files"] == 1


def test_lr_is_divided_by_ten_when_val_error_plateaus(synth_root: Path, tmp_path: Path) -> None:
    extra = ["--arch", "paper", "--epochs", "4", "--batch-size", "12", "--lr-patience", "0",
             "--min-lr", "1e-9"]  # fmt: skip
    train(train_args(synth_root, tmp_path, *extra))
    rows = load_checkpoint(tmp_path / "checkpoint.pt")["metrics"]
    # The paper's rule with no patience: after an epoch whose val error is not below the
    # best so far, the next epoch runs at a tenth of the lr.
    expected, best = [0.01], float("inf")
    for row in rows[:-1]:
        expected.append(expected[-1] / 10 if row["val_top1_err"] >= best else expected[-1])
        best = min(best, row["val_top1_err"])
    assert [r["lr"] for r in rows] == pytest.approx(expected)


def test_two_process_ddp_on_cpu_keeps_ranks_identical(synth_root: Path, tmp_path: Path) -> None:
    train_two_processes(synth_root, tmp_path, "--epochs", "1", "--batch-size", "12")
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["config"]["batch_size"] == 12  # global batch, 6 per rank
    # every validation image counted exactly once across the two ranks
    assert round(ckpt["metrics"][0]["val_top1_err"] * 12) == pytest.approx(
        ckpt["metrics"][0]["val_top1_err"] * 12
    )


def test_cpu_training_runs_in_bf16_where_the_cpu_has_it(synth_root: Path, tmp_path: Path) -> None:
    """`--amp` on CPU: bf16 autocast where the CPU does bf16 in hardware (it then computes a
    different loss from `--no-amp`'s fp32), fp32 elsewhere (the same loss)."""
    losses = {}
    for amp in ("--amp", "--no-amp"):
        out = tmp_path / amp
        train(train_args(synth_root, out, "--arch", "bn", "--epochs", "1", "--batch-size", "12",
                         "--device", "cpu", amp))  # fmt: skip
        losses[amp] = load_checkpoint(out / "checkpoint.pt")["metrics"][0]["train_loss"]
    caps = torch.cpu.get_capabilities()
    if any(caps.get(k) for k in CPU_BF16_FEATURES):
        assert losses["--amp"] != losses["--no-amp"]
        assert abs(losses["--amp"] - losses["--no-amp"]) < 0.1 * losses["--no-amp"]
    else:
        assert losses["--amp"] == losses["--no-amp"]
