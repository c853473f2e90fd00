"""`bench.turns`: the raw engine and a real server measured one after the other."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from bench import photos
from bench.turns import in_flight_batch, in_turns, slice_order
from core.imaging import load_256


def test_each_turn_has_both_parts_and_the_first_part_alternates() -> None:
    order = slice_order(4)
    assert len(order) == 8
    for turn in range(4):
        assert sorted(part for t, part in order if t == turn) == ["raw", "service"]
    firsts = [order[2 * turn][1] for turn in range(4)]
    assert firsts == ["raw", "service", "raw", "service"]
    # a slice is next to the same part of the neighbouring turn: raw, service, service, raw
    assert [part for _, part in order[1:3]] == ["service", "service"]


def test_three_parts_mirror_from_one_turn_to_the_next() -> None:
    order = slice_order(2, ("raw", "service", "in_flight"))
    assert [part for _, part in order] == ["raw", "service", "in_flight",
                                           "in_flight", "service", "raw"]  # fmt: skip


def test_the_batch_that_keeps_the_clients_images_in_flight() -> None:
    assert in_flight_batch(instances=2, clients=4) == 2
    assert in_flight_batch(instances=1, clients=4) == 4
    assert in_flight_batch(instances=3, clients=4) == 1  # 3 in flight: 2 images a call is 6
    assert in_flight_batch(instances=4, clients=2) is None  # calls the clients cannot fill


def turns_of_exported(exported: Path, work: Path, *, instances: int, threads: int, batch: int,
                      turns: int) -> dict:  # fmt: skip
    """`in_turns` of the exported tiny fp32 model, 2 clients, served in the raw configuration."""
    store, name = exported.parents[1], exported.parent.name
    jpegs = photos.photo_jpegs("500x375", count=2)
    return in_turns(store, f"{name}:1", "fp32", jpegs, np.stack([load_256(j) for j in jpegs]),
                    raw={"instances": instances, "threads": threads, "batch": batch},
                    env={"precision": "fp32", "model": name, "device": "cpu",
                         "threads": str(threads), "instances": str(instances)},
                    turns=turns, min_seconds=0.2, requests=4, gallery=work / "gallery",
                    server_log=work / "server.log", clients=2)  # fmt: skip


def test_turns_compare_each_raw_slice_with_the_service_slice_beside_it(
    tmp_path: Path, exported: Path
) -> None:
    got = turns_of_exported(exported, tmp_path, instances=1, threads=2, batch=1, turns=3)
    parts = ("raw", "service", "in_flight")  # 2 clients keep 2 images in flight, not 1
    assert [(s["turn"], s["part"]) for s in got["slices"]] == slice_order(3, parts)
    rates = {(s["turn"], s["part"]): s["images_per_s"] for s in got["slices"]}
    assert all(rate > 0 for rate in rates.values())
    assert got["ratios"] == pytest.approx([rates[t, "service"] / rates[t, "raw"]
                                           for t in range(3)])  # fmt: skip
    assert got["ratio_median"] == pytest.approx(statistics.median(got["ratios"]))
    assert got["ratio_min"] <= got["ratio_median"] <= got["ratio_max"]
    service = [s for s in got["slices"] if s["part"] == "service"]
    # every request answered, each service slice as many as the first raw slice served
    # images in min_seconds (at least `requests`)
    assert all(s["errors"] == 0 and s["n"] == got["requests_per_slice"] for s in service)
    assert got["requests_per_slice"] >= 4
    assert got["raw"] == {"instances": 1, "threads": 2, "batch": 1}
    assert got["served"] == {"instances": 1, "threads": 2}
    flight = got["in_flight"]
    assert flight["batch"] == 2 and flight["measured"]
    assert flight["ratios"] == pytest.approx([rates[t, "service"] / rates[t, "in_flight"]
                                              for t in range(3)])  # fmt: skip
    assert flight["ratio_median"] == pytest.approx(statistics.median(flight["ratios"]))


def test_no_third_part_where_the_fastest_batch_already_matches_the_clients(
    tmp_path: Path, exported: Path
) -> None:
    got = turns_of_exported(exported, tmp_path, instances=2, threads=1, batch=1, turns=1)
    assert [s["part"] for s in got["slices"]] == ["raw", "service"]
    assert got["in_flight"]["measured"] is False
    assert got["in_flight"]["ratios"] == got["ratios"]


def test_at_least_one_turn() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        in_turns(Path("."), "x:1", "fp32", [], np.zeros((0, 256, 256, 3), np.uint8), raw={},
                 env={}, turns=0, min_seconds=1, requests=1, gallery=Path("g"),
                 server_log=Path("log"))  # fmt: skip
