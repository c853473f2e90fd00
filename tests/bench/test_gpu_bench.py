"""`python -m bench.gpu`, the GPU checklist's timed parts, run on the CPU: each part measures
the real code path and writes its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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
                 "--precisions", "fp32", "--batches", "1", "2", "--min-seconds", "0.1",
                 "--mixed")  # fmt: skip
    assert [r["batch"] for r in record["rows"]] == [1, 2, "mixed 1,2"]
    assert all(r["providers"] == ["CPUExecutionProvider"] for r in record["rows"])


def test_mixed_calls_take_the_batch_sizes_in_turn(exported: Path) -> None:
    from bench.throughput import calls_in_turn
    from core.model_loader import load_model

    loaded = load_model(exported.parents[1], f"{exported.parent.name}:1", precision="fp32")
    one, two = (np.zeros((n, 256, 256, 3), np.uint8) for n in (1, 2))
    call, sizes = calls_in_turn(loaded.session, [one, two])
    probs = [call()[0] for _ in range(3)]
    assert sizes == [1, 2, 1] and [len(p) for p in probs] == [1, 2, 1]


def test_service_answers_every_request(tmp_path: Path, exported: Path) -> None:
    store, name = exported.parents[1], exported.parent.name
    record = run(tmp_path, "service", "--store", str(store), "--model", name,
                 "--precision", "fp32", "--clients", "2", "--requests", "6", "--instances",
                 "1", "2", "--threads", "1", "--work", str(tmp_path / "work"))  # fmt: skip
    rows = record["rows"]
    assert [r["instances"] for r in rows] == [1, 2]  # one server per ALEXNET_INSTANCES
    assert [r["threads"] for r in rows] == [1, 1]
    for row in rows:
        assert row["errors"] == 0 and row["n"] == 16  # max(requests, 8 x clients)
        # counted by the server itself (its /metrics): images per engine call, its CPU per image
        assert 1 <= row["batch_mean"] <= 2 and row["process_cpu_ms_per_image"] > 0
    log = (tmp_path / "work" / "server.log").read_text()
    assert "1 engine call(s) at once" in log and "2 engine call(s) at once" in log


def test_fp16_compares_both_conversions_on_the_lrn_and_the_model(
    tmp_path: Path, exported: Path
) -> None:
    """On the CPU, onnxruntime computes float16 layers in float32, so neither file shows
    the overflow here (the part exists for CUDA); what it measures still runs for real."""
    store, name = exported.parents[1], exported.parent.name
    record = run(tmp_path, "fp16", "--store", str(store), "--model", f"{name}:1", "--batches",
                 "2", "--min-seconds", "0.1", "--work", str(tmp_path / "work"))  # fmt: skip
    rows = record["rows"]
    lrn = [r for r in rows if r["graph"] == "LRN1"]
    assert len(lrn) == 10 and max(r["x_max"] for r in lrn) > 1000  # past float16's square limit
    model = [r for r in rows if r["graph"] != "LRN1"]
    expected = [(f"{name}:1 conv1 x{f}", file) for f in (1, 8) for file in ("plain", "ours")]
    assert [(r["graph"], r["file"]) for r in model] == expected
    assert all(r["nan_images"] == 0 and r["top1_agreement"] > 0.9 and r["images_per_s"] > 0
               and r["provider"] == "CPUExecutionProvider" for r in model)  # fmt: skip


def test_an_image_with_nan_probabilities_disagrees() -> None:
    """A float16 overflow gives rows of NaN, whose argmax is class 0: they must not count
    as agreeing with a float32 top-1 of class 0 (the first CUDA run of `fp16` showed 62.5%
    "agreement" for files whose every probability was NaN)."""
    expected = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [np.nan, np.nan]])
    assert gpu.top1_agreement(probs, expected) == 2 / 3
    assert gpu.top1_agreement(np.full((3, 2), np.nan), expected) == 0.0
    assert gpu.top1_agreement(expected, expected) == 1.0
