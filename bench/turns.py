"""The service against the raw engine in turns: the service / raw ratio measured so that a
host whose speed drifts from one minute to the next does not decide it.

The raw engine (in the configuration and batch size the bench found fastest) and the served
model (in that configuration of calls x threads) take turns: raw, service,
service, raw, raw, service, ... One server runs throughout, idle while the raw engine runs
in this process. Each turn's ratio compares two slices measured one right after the other,
and the figure is the median over the turns: a burst of load on the host that hits one
slice moves one turn's ratio, not the figure. (On the 2-vCPU VM of the README's runs the
session's CPU time per image once doubled for about ten seconds; measured minutes apart,
raw and service rows differed by up to 15% for no reason of their own.)
"""

from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path

from alexnet.local_server import serve
from bench import throughput
from core.imaging import load_256
from core.model_loader import load_model

log = logging.getLogger("bench")


def slice_order(turns: int) -> list[tuple[int, str]]:
    """(turn, "raw" or "service") for each slice: raw first in even turns, service first in
    odd ones, so that a steady drift favours neither side."""
    parts = ("raw", "service")
    return [(turn, part) for turn in range(turns) for part in parts[:: 1 if turn % 2 == 0 else -1]]


def in_turns(
    store: Path, model: str, precision: str, jpegs: list[bytes], *, raw: dict, env: dict,
    turns: int, min_seconds: float, requests: int, work: Path, clients: int = 4,
    spinning: bool | None = None, port: int | None = None,
) -> dict:  # fmt: skip
    """Measure the raw engine and the service in `turns` turns (`slice_order`).

    Args:
        store, model, precision: the model both run.
        jpegs: the photos the clients post (the raw engine gets them decoded to 256x256).
        raw: the raw configuration: "instances" (calls at once), "threads" (intra-op), "batch".
        env: the server's settings (`serve`'s ALEXNET_* keywords), its configuration included.
        turns: how many turns.
        min_seconds: the least time of a raw slice; a service slice posts as many requests
            as the first raw slice served images in that time (at least `requests`).
        requests: the least requests of a service slice.
        work: where the server's empty gallery and log go.
        clients: concurrent clients of the service slices.
        spinning: onnxruntime's intra-op spinning of the raw session (the server's is in env).
        port: the server's port (default: a free one).

    Returns:
        every slice, each turn's service / raw images/s, their median and their range.
    """
    if turns < 1:
        raise ValueError(f"turns must be at least 1, got {turns}")
    loaded = load_model(store, model, precision=precision, device="cpu",
                        threads=raw["threads"] or None, spinning=spinning)  # fmt: skip
    batch = throughput.batch_of([load_256(j) for j in jpegs], raw["batch"])
    gallery = work / "gallery-empty"
    slices, rates = [], {}
    n = requests
    with serve(store, gallery, port=port, log=work / "server.log", timeout=1800, **env) as server:
        for turn, part in slice_order(turns):
            if part == "raw":
                row = throughput.raw_rate(loaded.session, [batch], raw["instances"], min_seconds)
                if not slices:  # service slices about as long as the raw ones
                    n = max(requests, math.ceil(row["images_per_s"] * min_seconds))
            else:
                row = throughput.load(server.url, "/predict", jpegs, clients, n)
            log.info("in turns, %s %s, turn %d, %s: %.1f images/s", model, precision, turn + 1,
                     part, row["images_per_s"])  # fmt: skip
            slices.append({"turn": turn, "part": part, **row})
            rates[turn, part] = row["images_per_s"]
    ratios = [rates[t, "service"] / rates[t, "raw"] for t in range(turns)]
    return {"raw": {k: raw[k] for k in ("instances", "threads", "batch")},
            "served": {"instances": int(env.get("instances", 1)),
                       "threads": int(env["threads"]) if env.get("threads") else None},
            "clients": clients, "requests_per_slice": n, "slices": slices, "ratios": ratios,
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios)}  # fmt: skip
