"""`python -m bench.gpu`, the GPU checklist's timed parts, run on the CPU: each part measures
the real code path and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

from bench import gpu


def run(tmp_path: Path, *argv: str) -> dict:
    gpu.main(gpu.get_args_parser().parse_args([*argv, "--device", "cpu", "--out", str(tmp_path)]))
    return json.loads((tmp_path / f"gpu-{argv[0]}.json").read_text())


def test_train_steps_run_the_real_training_step(tmp_path: Path) -> None:
    record = run(tmp_path, "train-steps", "--archs", "bn", "--batches", "4", "--steps", "2")
    (row,) = record["rows"]
    assert record["device"] == "cpu" and row["arch"] == "bn" and row["batch"] == 4
    assert row["images_per_s"] > 0 and 0 < row["loss"] < 20  # cross-entropy over 1000 classes


def test_decode_reports_both_decoders(tmp_path: Path) -> None:
    record = run(tmp_path, "decode", "--batches", "2", "--repeats", "1")
    assert {r["size"] for r in record["rows"]} == {"256x256", "500x375"}
    assert all(r["device_images_per_s"] > 0 and r["pillow_1thread_images_per_s"] > 0
               for r in record["rows"])  # fmt: skip


def test_engine_says_which_provider_ran(tmp_path: Path, exported: Path) -> None:
    store, name = exported.parents[1], exported.parent.name
    record = run(tmp_path, "engine", "--store", str(store), "--model", f"{name}:1",
                 "--precisions", "fp32", "--batches", "1", "2", "--min-seconds", "0.1")  # fmt: skip
    assert [r["batch"] for r in record["rows"]] == [1, 2]
    assert all(r["providers"] == ["CPUExecutionProvider"] for r in record["rows"])


def test_service_answers_every_request(tmp_path: Path, exported: Path) -> None:
    store, name = exported.parents[1], exported.parent.name
    record = run(tmp_path, "service", "--store", str(store), "--model", name,
                 "--precision", "fp32", "--clients", "2", "--requests", "6",
                 "--work", str(tmp_path / "work"))  # fmt: skip
    (row,) = record["rows"]
    assert row["errors"] == 0 and row["n"] == 16  # max(requests, 8 x clients)
    # counted by the server itself (its /metrics): images per engine call, its CPU per image
    assert 1 <= row["batch_mean"] <= 2 and row["process_cpu_ms_per_image"] > 0
