"""The bench's int8 vs fp32 figure and its ratios, from raw engine and service rows."""

from __future__ import annotations

import pytest

from bench.report import int8_speedups, summary, table


def row(arch: str, precision: str, batch: int, rate: float, instances: int = 1) -> dict:
    return {"arch": arch, "precision": precision, "batch": batch, "images_per_s": rate,
            "instances": instances, "threads": 2 // instances,
            "call_ms_p50": 1000 * batch * instances / rate,
            "cpu_ms_per_image": 2000 / rate}  # fmt: skip


def served(instances: int, clients: int, rate: float, p50: float) -> dict:
    return {"arch": "paper", "precision": "int8", "size": "500x375", "instances": instances,
            "threads": 2 // instances, "clients": clients, "images_per_s": rate,
            "p50_ms": p50, "process_cpu_ms_per_image": 2000 / rate,
            "overhead_cpu_ms_per_image": 4.0, "ceiling_fraction": 0.9}  # fmt: skip


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


def test_each_precision_counts_at_its_fastest_configuration_of_calls() -> None:
    engine = [row("paper", "fp32", 1, 16.0), row("paper", "fp32", 1, 15.0, 2),
              row("paper", "int8", 1, 40.0), row("paper", "int8", 1, 50.0, 2)]  # fmt: skip
    got = int8_speedups(engine)
    assert got["paper"]["by_batch"] == pytest.approx({1: 50.0 / 16.0})
    assert "| paper | int8 | 2 x 1 | 1 | 50.0 |" in table({"engine": engine})


def test_the_ratios_compare_the_best_served_configuration_with_the_fastest_raw_one() -> None:
    engine = [row("paper", "int8", 1, 40.0), row("paper", "int8", 2, 38.0),
              row("paper", "int8", 1, 50.0, instances=2)]  # fmt: skip
    service = [served(1, 1, 30.0, 25.0), served(1, 4, 36.0, 100.0),
               served(2, 1, 20.0, 40.0), served(2, 4, 45.0, 80.0)]  # fmt: skip
    got = summary({"engine": engine, "service": service})["paper int8 500x375"]
    assert got["service_vs_raw_at_4_clients"] == pytest.approx(45.0 / 50.0)
    assert got["calls_at_4_clients"] == "2 x 1"
    # idle latency: the quickest served configuration against the quickest single call
    assert got["idle_p50_vs_raw_call"] == pytest.approx(25.0 / 25.0)


def test_the_ratio_in_turns_is_the_median_of_its_turns() -> None:
    turn = {"arch": "paper", "precision": "int8", "size": "500x375", "clients": 4,
            "raw": {"instances": 2, "threads": 1, "batch": 1},
            "served": {"instances": 2, "threads": 1},
            "slices": [{"turn": t, "part": p, "images_per_s": rate}
                       for t, p, rate in [(0, "raw", 50.0), (0, "service", 45.0),
                                          (1, "service", 30.0), (1, "raw", 50.0),
                                          (2, "raw", 40.0), (2, "service", 38.0)]],
            "ratios": [0.9, 0.6, 0.95], "ratio_median": 0.9, "ratio_min": 0.6,
            "ratio_max": 0.95}  # fmt: skip
    got = summary({"turns": [turn]})["paper int8 500x375"]
    assert got["service_vs_raw_in_turns"] == pytest.approx(0.9)
    assert got["service_vs_raw_in_turns_range"] == pytest.approx([0.6, 0.95])
    text = table({"turns": [turn]})
    assert ("| paper | int8 | 2 x 1, 1 | 2 x 1 | 4 | 50.0 / 50.0 / 40.0 | 45.0 / 30.0 / 38.0 | "
            "0.90 / 0.60 / 0.95 | **0.90x** | - | - | - |") in text  # fmt: skip
    assert "service_vs_raw_same_in_flight_in_turns" not in got


def test_the_ratio_against_the_raw_engine_with_the_clients_images_in_flight() -> None:
    rates = [(0, "raw", 50.0), (0, "service", 45.0), (0, "in_flight", 48.0),
             (1, "in_flight", 40.0), (1, "service", 36.0), (1, "raw", 45.0),
             (2, "raw", 50.0), (2, "service", 44.0), (2, "in_flight", 44.0)]  # fmt: skip
    turn = {"arch": "bn", "precision": "int8", "size": "500x375", "clients": 4,
            "raw": {"instances": 2, "threads": 1, "batch": 4},
            "served": {"instances": 2, "threads": 1},
            "slices": [{"turn": t, "part": p, "images_per_s": r} for t, p, r in rates],
            "ratios": [0.9, 0.8, 0.88], "ratio_median": 0.88, "ratio_min": 0.8,
            "ratio_max": 0.9,
            "in_flight": {"batch": 2, "measured": True, "ratios": [0.9375, 0.9, 1.0],
                          "ratio_median": 0.9375, "ratio_min": 0.9, "ratio_max": 1.0}}  # fmt: skip
    got = summary({"turns": [turn]})["bn int8 500x375"]
    assert got["service_vs_raw_in_turns"] == pytest.approx(0.88)
    assert got["service_vs_raw_same_in_flight_in_turns"] == pytest.approx(0.9375)
    assert got["service_vs_raw_same_in_flight_in_turns_range"] == pytest.approx([0.9, 1.0])
    assert got["raw_batch_same_in_flight"] == 2
    assert ("| bn | int8 | 2 x 1, 4 | 2 x 1 | 4 | 50.0 / 45.0 / 50.0 | 45.0 / 36.0 / 44.0 | "
            "0.90 / 0.80 / 0.88 | **0.88x** | 2, 48.0 / 40.0 / 44.0 | 0.94 / 0.90 / 1.00 | "
            "**0.94x** |") in table({"turns": [turn]})  # fmt: skip
    # where the fastest batch is already the clients' (not measured twice), the raw part is
    turn["in_flight"] |= {"batch": 4, "measured": False}
    assert "| 4, the raw part |" in table({"turns": [turn]})
