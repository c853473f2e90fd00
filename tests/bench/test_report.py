"""The bench's int8 vs fp32 figure, from raw engine rows."""

from __future__ import annotations

import pytest

from bench.report import int8_speedups, table


def row(arch: str, precision: str, batch: int, rate: float) -> dict:
    return {"arch": arch, "precision": precision, "batch": batch, "images_per_s": rate,
            "call_ms_p50": 1000 * batch / rate, "cpu_ms_per_image": 2000 / rate}  # fmt: skip


def test_int8_over_fp32_per_batch_and_best_over_best() -> None:
    engine = [row("paper", "fp32", 1, 15.0), row("paper", "fp32", 8, 20.0),
              row("paper", "int8", 1, 45.0), row("paper", "int8", 8, 40.0),
              row("paper", "int8", 4, 50.0),  # no fp32 at batch 4: in best only
              row("bn", "fp32", 1, 10.0)]  # fmt: skip
    got = int8_speedups(engine)
    assert set(got) == {"paper"}  # bn has no int8 row
    assert got["paper"]["by_batch"] == pytest.approx({1: 3.0, 8: 2.0})
    assert got["paper"]["best_vs_best"] == pytest.approx(50.0 / 20.0)
    assert "paper: int8 vs fp32 images/s: batch 1 3.00x, batch 8 2.00x; best batch vs " \
           "best batch 2.50x" in table({"engine": engine})  # fmt: skip
