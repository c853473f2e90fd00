"""Crash safety: SIGKILL a real `alexnet serve` while a client thread adds gallery items.

After every restart each item that got a 201 must be listed, serve its bytes back, and be
found by /similar at distance ~0; the gallery's count, its index and its image files must
agree. `crash_cycles` is shared with the soak (tests/soak), which runs more cycles.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from core.constants import GALLERY_IMAGES_DIR
from tests.service.conftest import API_KEY, serve
from training.synth import CLASS_NAMES, draw_image

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def distinct_image(i: int, seed: int = 0) -> bytes:
    """The i-th of a sequence of different synthetic JPEGs."""
    img = draw_image(CLASS_NAMES[i % len(CLASS_NAMES)], np.random.default_rng((seed, i)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@dataclass
class CrashReport:
    """What `crash_cycles` saw; `lost` must stay empty."""

    cycles: int = 0
    posts: int = 0  # POST /gallery requests sent
    acknowledged: dict[str, bytes] = field(default_factory=dict)  # id -> bytes, got a 201
    in_flight_at_kill: int = 0  # posts cut off by the kill (no answer)
    in_flight_kept: int = 0  # of those, items found after the restart (committed, unanswered)
    lost: set[str] = field(default_factory=set)  # acknowledged, then missing or changed
    checked_similar: int = 0


class Poster(threading.Thread):
    """Posts distinct images to /gallery, one after another, until the server dies."""

    def __init__(self, url: str, first: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.url, self.next, self.seed = url, first, seed
        self.acknowledged: dict[str, bytes] = {}
        self.posts = 0
        self.cut_off: bytes | None = None  # the image whose post the kill interrupted
        self.error: str | None = None  # an answer other than 201 (the test fails on it)

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while True:
                data = distinct_image(self.next, self.seed)
                self.next += 1
                self.posts += 1
                try:
                    r = client.post(
                        f"{self.url}/gallery",
                        files=[("image", (f"{self.next}.jpg", data, "image/jpeg"))],
                        data={"label": "crash", "metadata": json.dumps({"n": self.next})},
                        headers=AUTH,
                    )
                except httpx.TransportError:
                    self.cut_off = data
                    return
                if r.status_code != 201:
                    self.error = f"{r.status_code}: {r.text}"
                    return
                (item,) = r.json()["items"]
                self.acknowledged[item["id"]] = data


def gallery_state(url: str) -> tuple[set[str], int, int]:
    """(ids of every listed item, the listed total, the index size from /metrics)."""
    items: set[str] = set()
    while True:
        page = httpx.get(f"{url}/gallery", params={"offset": len(items), "limit": 500}).json()
        items |= {i["id"] for i in page["items"]}
        if not page["items"]:
            break
    metrics = httpx.get(f"{url}/metrics").text
    index_size = int(float(re.search(r"^alexnet_gallery_items (\S+)$", metrics, re.M).group(1)))
    return items, page["total"], index_size


def check_gallery(url: str, gallery: Path, report: CrashReport, similar: bool) -> set[str]:
    """Every acknowledged item is there and whole; count, index and files agree.

    Returns:
        The ids listed.
    """
    items, total, index_size = gallery_state(url)
    assert len(items) == total == index_size, (len(items), total, index_size)
    assert len(list((gallery / GALLERY_IMAGES_DIR).iterdir())) == total, "orphan or missing files"
    report.lost |= {i for i in report.acknowledged if i not in items}
    for item_id, data in report.acknowledged.items():
        r = httpx.get(f"{url}/gallery/{item_id}/image")
        if r.status_code != 200 or r.content != data:
            report.lost.add(item_id)
    if similar:
        for item_id, data in report.acknowledged.items():
            r = httpx.post(
                f"{url}/similar",
                files=[("image", ("q.jpg", data))],
                params={"k": min(total, 1000)},
                timeout=60,
            )
            distance = {n["id"]: n["distance"] for n in r.json()["neighbors"]}
            if distance.get(item_id, 1.0) > 1e-3:
                report.lost.add(item_id)
            report.checked_similar += 1
    if 0 < total <= 1000:  # a search over the whole gallery finds every indexed item once
        r = httpx.get(
            f"{url}/gallery/{next(iter(items))}/similar",
            params={"k": total, "exclude_self": "false"},
        )
        assert sorted(n["id"] for n in r.json()["neighbors"]) == sorted(items)
    return items


def crash_cycles(
    store: Path, gallery: Path, cycles: int, *, min_acked: int = 6, seed: int = 0
) -> CrashReport:
    """`cycles` times: start, post from a thread, SIGKILL, then restart and check.

    The last check also searches /similar with every acknowledged image.
    """
    rng = random.Random(seed)
    report = CrashReport()
    listed: set[str] = set()
    cut_off: bytes | None = None  # the image of the post the last kill interrupted
    next_image = 0
    for cycle in range(cycles + 1):
        with serve(store, gallery, api_key=API_KEY) as server:
            items = check_gallery(server.url, gallery, report, similar=cycle == cycles)
            # Committed but never answered: allowed, if it is whole and the one sent.
            for item_id in items - listed - report.acknowledged.keys():
                assert cut_off is not None, f"{item_id} appeared from nowhere"
                assert httpx.get(f"{server.url}/gallery/{item_id}/image").content == cut_off
                report.in_flight_kept += 1
            listed = items
            if cycle == cycles:
                break
            poster = Poster(server.url, next_image, seed)
            poster.start()
            deadline = time.monotonic() + 60
            while len(poster.acknowledged) < min_acked and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0, 0.4))  # land the kill anywhere in a request
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
            poster.join(timeout=30)
            assert not poster.is_alive()
            assert poster.error is None, poster.error
        next_image, cut_off = poster.next, poster.cut_off
        report.cycles += 1
        report.posts += poster.posts
        report.acknowledged |= poster.acknowledged
        report.in_flight_at_kill += cut_off is not None
    return report


def test_acknowledged_items_survive_sigkill(exported: Path, tmp_path: Path) -> None:
    report = crash_cycles(exported.parent.parent, tmp_path / "gallery", cycles=2)
    print(f"crash: {report.posts} posts, {len(report.acknowledged)} got 201, lost {report.lost}")
    assert report.cycles == 2 and len(report.acknowledged) >= 12
    assert report.lost == set()
    assert report.checked_similar == len(report.acknowledged)
