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

The fastest raw batch may keep another number of images in flight than the clients do (2
calls of 4 images, or of 1, against 4 clients). Where it does, a third part runs in the
same turns: the raw engine in the served configuration with as many images in flight as
the clients keep (`in_flight_batch`), the most the service's engine could ever be given at
that load. The turns then go raw, service, in flight, in flight, service, raw, ... and the
service is compared with both: the first ratio is what serving costs against the engine's
best, the second what it costs against the same work done without it.
"""

from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path

import numpy as np

from alexnet.local_server import serve
from bench import throughput
from core.model_loader import load_model

log = logging.getLogger("bench")


def slice_order(turns: int, parts: tuple[str, ...] = ("raw", "service")) -> list[tuple[int, str]]:
    """(turn, part) for each slice: `parts` in order in even turns and reversed in odd ones,
    so that a steady drift favours none of them."""
    return [(turn, part) for turn in range(turns) for part in parts[:: 1 if turn % 2 == 0 else -1]]


def in_flight_batch(instances: int, clients: int) -> int | None:
    """The most images per call at which `instances` concurrent calls keep no more images in
    flight than `clients` clients of one image each (4 clients, 2 calls: 2; None where there
    are fewer clients than calls)."""
    return clients // instances if clients >= instances else None


def _ratios(rates: dict, turns: int, part: str) -> dict:
    ratios = [rates[t, "service"] / rates[t, part] for t in range(turns)]
    return {"ratios": ratios, "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios)}  # fmt: skip


def in_turns(
    store: Path, model: str, precision: str, jpegs: list[bytes], pixels: np.ndarray, *,
    raw: dict, env: dict, turns: int, min_seconds: float, requests: int, gallery: Path,
    server_log: Path, clients: int = 4, spinning: bool | None = None, port: int | None = None,
) -> dict:  # fmt: skip
    """Measure the raw engine and the service in `turns` turns (`slice_order`).

    Args:
        store, model, precision: the model both run.
        jpegs: the photos the clients post.
        pixels: the same photos decoded to uint8 (n, 256, 256, 3), the raw engine's input.
        raw: the raw configuration: "instances" (calls at once), "threads" (intra-op), "batch".
        env: the server's settings (`serve`'s ALEXNET_* keywords), its configuration included.
        turns: how many turns.
        min_seconds: the least time of a raw slice; a service slice posts as many requests
            as the first raw slice served images in that time (at least `requests`).
        requests: the least requests of a service slice.
        gallery: the server's gallery folder (the clients only post to /predict).
        server_log: where the server's output goes.
        clients: concurrent clients of the service slices.
        spinning: onnxruntime's intra-op spinning of the raw session (the server's is in env).
        port: the server's port (default: a free one).

    Returns:
        every slice; each turn's service / raw images/s, their median and their range; and
        under "in_flight" the same against the raw engine with the clients' images in
        flight (its batch, and "measured": false where that is the raw part itself).
    """
    if turns < 1:
        raise ValueError(f"turns must be at least 1, got {turns}")
    loaded = load_model(store, model, precision=precision, device="cpu",
                        threads=raw["threads"] or None, spinning=spinning)  # fmt: skip
    flight = in_flight_batch(raw["instances"], clients)
    inputs = {"raw": throughput.batch_of(pixels, raw["batch"])}
    if flight is not None and flight != raw["batch"]:
        inputs["in_flight"] = throughput.batch_of(pixels, flight)
    parts = ("raw", "service", "in_flight")[: 3 if "in_flight" in inputs else 2]
    slices, rates = [], {}
    n = requests
    with serve(store, gallery, port=port, log=server_log, timeout=1800, **env) as server:
        for turn, part in slice_order(turns, parts):
            if part == "service":
                row = throughput.load(server.url, "/predict", jpegs, clients, n)
            else:
                row = throughput.raw_rate(loaded.session, [inputs[part]], raw["instances"],
                                          min_seconds)  # fmt: skip
                if not slices:  # service slices about as long as the raw ones
                    n = max(requests, math.ceil(row["images_per_s"] * min_seconds))
            log.info("in turns, %s %s, turn %d, %s: %.1f images/s", model, precision, turn + 1,
                     part, row["images_per_s"])  # fmt: skip
            slices.append({"turn": turn, "part": part, **row})
            rates[turn, part] = row["images_per_s"]
    out = {"raw": {k: raw[k] for k in ("instances", "threads", "batch")},
           "served": {"instances": int(env.get("instances", 1)),
                      "threads": int(env["threads"]) if env.get("threads") else None},
           "clients": clients, "requests_per_slice": n, "slices": slices,
           **_ratios(rates, turns, "raw")}  # fmt: skip
    if flight is not None:
        measured = "in_flight" in inputs
        out["in_flight"] = {
            "batch": flight,
            "measured": measured,
            **_ratios(rates, turns, "in_flight" if measured else "raw"),
        }
    return out
