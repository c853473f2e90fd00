"""`bench.turns`: the raw engine and a real server measured one after the other."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from bench import photos
from bench.turns import in_turns, slice_order


def test_each_turn_has_both_parts_and_the_first_part_alternates() -> None:
    order = slice_order(4)
    assert len(order) == 8
    for turn in range(4):
        assert sorted(part for t, part in order if t == turn) == ["raw", "service"]
    firsts = [order[2 * turn][1] for turn in range(4)]
    assert firsts == ["raw", "service", "raw", "service"]
    # a slice is next to the same part of the neighbouring turn: raw, service, service, raw
    assert [part for _, part in order[1:3]] == ["service", "service"]


def test_turns_compare_each_raw_slice_with_the_service_slice_beside_it(
    tmp_path: Path, exported: Path
) -> None:
    store, name = exported.parents[1], exported.parent.name
    jpegs = photos.photo_jpegs("500x375", count=2)
    got = in_turns(store, f"{name}:1", "fp32", jpegs,
                   raw={"instances": 1, "threads": 2, "batch": 1},
                   env={"precision": "fp32", "model": name, "device": "cpu", "threads": "2"},
                   turns=3, min_seconds=0.2, requests=4, work=tmp_path, clients=2)  # fmt: skip
    assert [(s["turn"], s["part"]) for s in got["slices"]] == slice_order(3)
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


def test_at_least_one_turn() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        in_turns(Path("."), "x:1", "fp32", [], raw={}, env={}, turns=0, min_seconds=1,
                 requests=1, work=Path("."))  # fmt: skip
