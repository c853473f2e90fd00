"""Switching models while serving (POST /models/switch), against real `alexnet serve`
processes: while client threads call /predict, /similar and POST /gallery, the server
re-embeds its gallery with another exported version and switches; nothing answers 5xx,
every /predict answer is exactly one model's, and afterwards every acknowledged item is found
with the new model's vector. A broken file leaves the old model serving and says why; on a
PostgreSQL gallery the other replica follows the switch.

The store: `exported` (tiny:1) copied, tiny:2 = the same checkpoint with its classifier
perturbed (another "training run": its fc7 vectors differ), tiny:3 = tiny:2 with a corrupt
model.onnx (its sha256 no longer matches the manifest).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from core.model_loader import load_model
from service.decode import decode
from service.engine import Engine
from service.model_switch import SwitchJob
from service.routers.gallery import _embed
from tests.service.conftest import API_KEY, SMALL_LIMITS, encode, serve
from tests.service.test_crash import distinct_image

AUTH = {"Authorization": f"Bearer {API_KEY}"}
SWITCH_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def switch_store(
    exported: Path, trained_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A store with tiny:1, tiny:2 (other weights) and tiny:3 (a corrupt file)."""
    from training.checkpoint import load_checkpoint
    from training.export import export_checkpoint

    store_dir = tmp_path_factory.mktemp("switch-store")
    shutil.copytree(exported, store_dir / "tiny" / "1")
    ckpt = load_checkpoint(trained_run / "checkpoint.pt")
    generator = torch.Generator().manual_seed(5)
    for key, value in ckpt["model"].items():
        if key.startswith("classifier") and key.endswith("weight"):
            noise = torch.randn(value.shape, generator=generator, dtype=value.dtype)
            ckpt["model"][key] = value + 0.5 * value.std() * noise
    export_checkpoint(ckpt, store_dir=store_dir, name="tiny", version=2,
                      source={"checkpoint": "perturbed"})  # fmt: skip
    broken = store_dir / "tiny" / "3"
    shutil.copytree(store_dir / "tiny" / "2", broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "version": 3}))
    onnx = bytearray((broken / "model.onnx").read_bytes())
    onnx[len(onnx) // 2 : len(onnx) // 2 + 64] = bytes(64)
    (broken / "model.onnx").write_bytes(bytes(onnx))
    return store_dir


class Offline:
    """The two good models run here, to tell which one answered a request."""

    def __init__(self, store_dir: Path) -> None:
        self.models = {
            spec: load_model(store_dir, spec, precision="fp32", device="cpu", threads=1)
            for spec in ("tiny:1", "tiny:2")
        }

    def outputs(self, spec: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        pixels, _ = decode(data, max_bytes=2**24, max_pixels=2**24)
        probs, fc7 = self.models[spec].session.run(["probs", "fc7"], {"images": pixels[None]})
        return probs[0], fc7[0]


def add(url: str, images: list[bytes], client: httpx.Client | None = None) -> httpx.Response:
    post = client.post if client is not None else httpx.post
    return post(f"{url}/gallery", files=[("image", (f"{i}.jpg", d)) for i, d in enumerate(images)],
                headers=AUTH, timeout=120)  # fmt: skip


def seed_gallery(url: str, n: int, seed: int) -> dict[str, bytes]:
    """n distinct images added 4 at a time; id -> bytes."""
    images = [distinct_image(i, seed=seed) for i in range(n)]
    stored: dict[str, bytes] = {}
    for start in range(0, n, 4):
        chunk = images[start : start + 4]
        r = add(url, chunk)
        assert r.status_code == 201, r.text
        stored.update(zip([item["id"] for item in r.json()["items"]], chunk, strict=True))
    return stored


def switch(url: str, model: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/models/switch", json={"model": model},
                      headers=headers or AUTH, timeout=30)  # fmt: skip


def settled(url: str, seen: list[dict] | None = None) -> dict:
    """GET /models once no switch is running (each answer meanwhile appended to `seen`)."""
    deadline = time.monotonic() + SWITCH_TIMEOUT_S
    while time.monotonic() < deadline:
        models = httpx.get(f"{url}/models", timeout=30).json()
        if seen is not None:
            seen.append(models)
        preparing = models["preparing"]
        if preparing is None or preparing["state"] == "failed":
            return models
        time.sleep(0.2)
    raise AssertionError(f"the switch did not settle in {SWITCH_TIMEOUT_S} s")


def found_at_zero(url: str, item_id: str, data: bytes) -> dict:
    r = httpx.post(f"{url}/similar", files=[("image", ("q.jpg", data))], params={"k": 1},
                   timeout=120)  # fmt: skip
    assert r.status_code == 200, r.text
    (hit,) = r.json()["neighbors"]
    assert hit["id"] == item_id and hit["distance"] < 1e-3, (item_id, hit)
    return hit


class Client(threading.Thread):
    """Sends one kind of request back to back until stopped; keeps every answer."""

    def __init__(self, send) -> None:
        super().__init__(daemon=True)
        self.send, self.stopped = send, threading.Event()
        self.answers: list[httpx.Response] = []
        self.failures: list[str] = []

    def run(self) -> None:
        with httpx.Client(timeout=120) as client:
            n = 0
            while not self.stopped.is_set():
                try:
                    self.answers.append(self.send(client, n))
                except httpx.TransportError as e:
                    self.failures.append(repr(e))
                n += 1

    def answer_more(self, n: int, timeout: float = 120) -> None:
        """Wait until `n` more answers have come (requests sent after this call)."""
        target = len(self.answers) + n + 1  # the one in flight may have started before
        deadline = time.monotonic() + timeout
        while len(self.answers) < target and time.monotonic() < deadline:
            time.sleep(0.1)

    def finish(self) -> None:
        self.stopped.set()
        self.join(timeout=180)
        assert not self.is_alive()
        assert not self.failures, self.failures


def test_switch_while_clients_predict_search_and_add(switch_store: Path, tmp_path: Path) -> None:
    offline = Offline(switch_store)
    probe = distinct_image(0, seed=71)
    expected = {spec: offline.outputs(spec, probe)[0] for spec in offline.models}
    fc7_1, fc7_2 = (offline.outputs(spec, probe)[1] for spec in ("tiny:1", "tiny:2"))
    assert np.linalg.norm(fc7_1 - fc7_2) > 100 * 1e-3, "the two versions embed alike"

    with serve(switch_store, tmp_path / "gallery", model="tiny:1", api_key=API_KEY,
               log=tmp_path / "server.log", **SMALL_LIMITS) as server:  # fmt: skip
        url = server.url
        stored = seed_gallery(url, 12, seed=72)
        query_id, query = next(iter(stored.items()))
        added: dict[str, bytes] = {}

        def predict(client: httpx.Client, n: int) -> httpx.Response:
            return client.post(f"{url}/predict", files=[("image", ("p.jpg", probe))],
                               params={"top_k": 4})  # fmt: skip

        def similar(client: httpx.Client, n: int) -> httpx.Response:
            return client.post(f"{url}/similar", files=[("image", ("q.jpg", query))],
                               params={"k": 3})  # fmt: skip

        def post(client: httpx.Client, n: int) -> httpx.Response:
            data = distinct_image(n, seed=73)
            r = add(url, [data], client)
            if r.status_code == 201:
                added[r.json()["items"][0]["id"]] = data
            return r

        clients = [Client(predict), Client(similar), Client(post)]
        for c in clients:
            c.start()
        seen: list[dict] = []
        try:
            time.sleep(1.0)
            r = switch(url, "tiny:2")
            assert r.status_code == 202, r.text
            assert r.json()["model"] == "tiny:2" and r.headers["location"] == "/models"
            models = settled(url, seen)
            for c in clients:  # the clients go on with the new model
                c.answer_more(2)
        finally:
            for c in clients:
                c.finish()

        assert models["loaded"]["id"] == "tiny:2", models
        assert models["preparing"] is None
        states = [m["preparing"]["state"] for m in seen if m["preparing"]]
        assert "re-embedding" in states, states
        progress = [m["preparing"] for m in seen if m["preparing"]]
        assert all(0 <= p["done"] <= p["total"] for p in progress)

        statuses = Counter(r.status_code for c in clients for r in c.answers)
        assert set(statuses) <= {200, 201}, statuses  # no 5xx (and no 503) at all
        assert all(len(c.answers) >= 3 for c in clients), statuses

        # Each /predict answer is exactly one whole model's, and once tiny:2 answered,
        # tiny:1 never did again.
        served = [r.json()["model"] for r in clients[0].answers]
        assert served[0] == "tiny:1" and served[-1] == "tiny:2", Counter(served)
        assert served == sorted(served), "tiny:1 answered after tiny:2"
        for r in clients[0].answers:
            body = r.json()
            for p in body["results"][0]["predictions"]:
                want = expected[body["model"]][p["index"]]
                assert abs(p["probability"] - want) < 1e-4, (body["model"], p, want)

        # Every acknowledged item is there once, with the new model's vector.
        everything = {**stored, **added}
        assert added, "no add was acknowledged during the test"
        listed = httpx.get(f"{url}/gallery", params={"limit": 500}).json()
        assert sorted(i["id"] for i in listed["items"]) == sorted(everything)
        for item_id, data in everything.items():
            found_at_zero(url, item_id, data)
        # ... and not the old one's: the old vector of the query is far from its new one.
        r = httpx.post(f"{url}/predict", files=[("image", ("q.jpg", query))],
                       params={"embedding": True})  # fmt: skip
        new_vector = np.array(r.json()["results"][0]["embedding"], np.float32)
        old_vector = offline.outputs("tiny:1", query)[1]
        assert np.allclose(new_vector, offline.outputs("tiny:2", query)[1], atol=1e-3)
        assert np.linalg.norm(new_vector - old_vector) > 0.1

        metrics = httpx.get(f"{url}/metrics").text
        assert 'alexnet_model_switches_total{kind="switch",outcome="succeeded"} 1.0' in metrics
        done = _gauge(metrics, "alexnet_model_switch_items_done")
        assert done == _gauge(metrics, "alexnet_model_switch_items_total") >= len(stored)
        assert 'alexnet_model_info{model="tiny:2"' in metrics


def _gauge(metrics: str, name: str) -> float:
    (line,) = [x for x in metrics.splitlines() if x.startswith(name + " ")]
    return float(line.split()[1])


def test_refusals_a_broken_file_and_a_second_switch(switch_store: Path, tmp_path: Path) -> None:
    with serve(switch_store, tmp_path / "gallery", model="tiny:1", api_key=API_KEY,
               log=tmp_path / "server.log", **SMALL_LIMITS) as server:  # fmt: skip
        url = server.url
        stored = seed_gallery(url, 4, seed=74)

        assert switch(url, "tiny:2", Authorization="Bearer wrong").status_code == 401
        r = httpx.post(f"{url}/models/switch", json={"model": "tiny:2"})
        assert r.status_code == 401, r.text
        assert switch(url, "nope").status_code == 404
        assert switch(url, "tiny:9").status_code == 404
        assert switch(url, "../tiny").status_code == 422
        assert switch(url, "tiny:1").status_code == 409  # the model in use
        bad_precision = httpx.post(f"{url}/models/switch", headers=AUTH,
                                   json={"model": "tiny:2", "precision": "int4"})  # fmt: skip
        assert bad_precision.status_code == 422
        assert httpx.get(f"{url}/models").json()["preparing"] is None

        # A corrupt file: the switch fails, the old model keeps serving, /models says why.
        r = switch(url, "tiny:3")
        assert r.status_code == 202, r.text
        models = settled(url)
        failed = models["preparing"]
        assert failed["state"] == "failed" and failed["model"] == "tiny:3", failed
        assert "corrupt" in failed["error"] and "sha256" in failed["error"], failed
        assert models["loaded"]["id"] == "tiny:1"
        r = httpx.post(f"{url}/predict", files=[("image", ("p.jpg", stored[next(iter(stored))]))])
        assert r.status_code == 200 and r.json()["model"] == "tiny:1"
        for item_id, data in stored.items():
            found_at_zero(url, item_id, data)
        metrics = httpx.get(f"{url}/metrics").text
        assert 'alexnet_model_switches_total{kind="switch",outcome="failed"} 1.0' in metrics

        # A good switch; a second one while it runs is refused.
        assert switch(url, "tiny:2").status_code == 202
        again = switch(url, "tiny:1")
        assert again.status_code == 409, again.text
        assert "already running" in again.json()["detail"]
        models = settled(url)
        assert models["loaded"]["id"] == "tiny:2" and models["preparing"] is None, models
        for item_id, data in stored.items():
            found_at_zero(url, item_id, data)

    # The gallery is now bound to tiny:2: a restart with tiny:2 opens it as it is.
    with serve(switch_store, tmp_path / "gallery", model="tiny:2",
               log=tmp_path / "server.log", **SMALL_LIMITS) as server:  # fmt: skip
        for item_id, data in stored.items():
            found_at_zero(server.url, item_id, data)


def test_replicas_on_postgresql_follow_a_switch(
    switch_store: Path, pg_url: str, tmp_path: Path
) -> None:
    settings = {"model": "tiny:1", "api_key": API_KEY, **SMALL_LIMITS}
    with (
        serve(switch_store, pg_url, log=tmp_path / "a.log", **settings) as a,
        serve(switch_store, pg_url, log=tmp_path / "b.log", **settings) as b,
    ):
        stored = seed_gallery(a.url, 8, seed=75)
        probe = next(iter(stored.values()))
        added: dict[str, bytes] = {}

        def predict_b(client: httpx.Client, n: int) -> httpx.Response:
            return client.post(f"{b.url}/predict", files=[("image", ("p.jpg", probe))])

        def similar_b(client: httpx.Client, n: int) -> httpx.Response:
            return client.post(f"{b.url}/similar", files=[("image", ("q.jpg", probe))])

        def post_b(client: httpx.Client, n: int) -> httpx.Response:
            data = distinct_image(n, seed=76)
            r = add(b.url, [data], client)
            if r.status_code == 201:
                added[r.json()["items"][0]["id"]] = data
            return r

        clients = [Client(predict_b), Client(similar_b), Client(post_b)]
        for c in clients:
            c.start()
        try:
            time.sleep(1.0)
            assert switch(a.url, "tiny:2").status_code == 202
            models = settled(a.url)
            assert models["loaded"]["id"] == "tiny:2", models
            deadline = time.monotonic() + 60
            while httpx.get(f"{b.url}/models").json()["loaded"]["id"] != "tiny:2":
                assert time.monotonic() < deadline, "replica b did not follow"
                time.sleep(0.2)
            for c in clients:  # b's clients go on with the new model
                c.answer_more(2)
        finally:
            for c in clients:
                c.finish()

        followed = httpx.get(f"{b.url}/models").json()
        assert followed["preparing"] is None, followed
        assert {r.status_code for r in clients[0].answers} == {200}  # /predict never stopped
        for c in clients[1:]:
            statuses = Counter(r.status_code for r in c.answers)
            assert set(statuses) <= {200, 201, 503}, statuses
            assert all("retry-after" in r.headers for r in c.answers if r.status_code == 503)
            assert c.answers[-1].status_code in (200, 201), statuses
        metrics = httpx.get(f"{b.url}/metrics").text
        assert 'alexnet_model_switches_total{kind="follow",outcome="succeeded"} 1.0' in metrics

        everything = {**stored, **added}
        assert added, "no add through b was acknowledged"
        for url in (a.url, b.url):
            for item_id, data in everything.items():
                found_at_zero(url, item_id, data)

        # A replica started afterwards with the old ALEXNET_MODEL follows the gallery too.
        with serve(switch_store, pg_url, log=tmp_path / "c.log", **settings) as c:
            deadline = time.monotonic() + 90
            while httpx.get(f"{c.url}/models").json()["loaded"]["id"] != "tiny:2":
                r = httpx.post(f"{c.url}/similar", files=[("image", ("q.jpg", probe))])
                assert r.status_code in (200, 503), r.text  # never the old model's answer
                if r.status_code == 503:
                    assert "retry-after" in r.headers
                else:  # followed between the two requests
                    assert r.json()["neighbors"][0]["distance"] < 1e-3
                assert time.monotonic() < deadline, "replica c did not follow"
                time.sleep(0.2)
            assert httpx.get(f"{c.url}/health/ready").json()["gallery"] == "ok"
            for item_id, data in everything.items():
                found_at_zero(c.url, item_id, data)


def test_the_contract_check_runs_the_file(exported: Path) -> None:
    """A model whose fc7 does not fit the gallery is refused before any re-embedding."""
    from core.model_loader import ModelLoadError
    from service.gallery import ModelBinding
    from service.model_switch import check_contract, spec_of

    loaded = load_model(exported.parent.parent, "tiny:1", precision="fp32", device="cpu")
    check_contract(loaded, 4096)
    with pytest.raises(ModelLoadError, match=r"'fc7': \(1, 4096\).*'fc7': \(1, 2048\)"):
        check_contract(loaded, 2048)
    assert spec_of(ModelBinding("tiny:2/int8", "a" * 64, 4096), "auto") == ("tiny:2", "int8")
    assert spec_of(ModelBinding("tiny:2", "a" * 64, 4096), "auto") == ("tiny:2", "auto")


def test_a_stop_during_the_re_embedding_leaves_the_gallery_on_the_old_model(
    switch_store: Path, tmp_path: Path
) -> None:
    gallery = tmp_path / "gallery"
    with serve(switch_store, gallery, model="tiny:1", api_key=API_KEY,
               log=tmp_path / "server.log", **SMALL_LIMITS) as server:  # fmt: skip
        stored = seed_gallery(server.url, 16, seed=77)
        assert switch(server.url, "tiny:2").status_code == 202
        deadline = time.monotonic() + 120
        while (httpx.get(f"{server.url}/models").json()["preparing"] or {}).get(
            "state") != "re-embedding":  # fmt: skip
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        server.process.terminate()
        server.process.wait(timeout=60)
        assert time.monotonic() - started < 30, "the stop waited for the re-embedding"
    with serve(switch_store, gallery, model="tiny:1",
               log=tmp_path / "server.log", **SMALL_LIMITS) as server:  # fmt: skip
        assert httpx.get(f"{server.url}/models").json()["loaded"]["id"] == "tiny:1"
        for item_id, data in stored.items():
            found_at_zero(server.url, item_id, data)


def test_an_add_during_a_switch_is_stored_when_the_new_model_gives_nan_for_it(
    overflowing_store: Path,
) -> None:
    """POST /gallery while tiny:2 re-embeds: the add embeds with both models (`_embed`). A
    bright image, which tiny:2 gives NaN for, is still stored with tiny:1's vector, and no
    tiny:2 vector is noted for it (the switch's catch-up meets it and fails, as above); a
    dark image gets tiny:2's vector as well."""
    current = Engine(load_model(overflowing_store, "tiny:1", precision="fp32", device="cpu"))
    upcoming = Engine(load_model(overflowing_store, "tiny:2", precision="fp32", device="cpu"))
    job = SwitchJob(model="tiny:2", precision="fp32", kind="switch", state="re-embedding",
                    engine=upcoming)  # fmt: skip
    dark, bright = np.full((1, 256, 256, 3), 20, np.uint8), np.full((1, 256, 256, 3), 200, np.uint8)

    async def scenario():
        await current.start()
        await upcoming.start()
        try:
            return await _embed(current, job, bright), await _embed(current, job, dark)
        finally:
            await current.stop()
            await upcoming.stop()

    (fc7, refused), (dark_fc7, dark_next) = asyncio.run(scenario())
    assert refused is None
    np.testing.assert_array_equal(fc7, current.run(bright)[1])  # tiny:1's own vector
    assert dark_fc7.shape == (1, 4096) and np.isfinite(dark_fc7).all()
    np.testing.assert_allclose(dark_next, np.sqrt(130), rtol=1e-6)  # tiny:2's: sqrt(150 - 20)


def test_a_switch_to_a_model_that_gives_nan_for_a_stored_image_fails(
    overflowing_store: Path, tmp_path: Path
) -> None:
    """tiny:2 gives NaN for bright images: re-embedding the gallery meets one, the switch
    fails, tiny:1 keeps serving and every stored vector stays tiny:1's."""
    bright = encode(Image.new("RGB", (300, 200), (200, 200, 200)))
    with serve(overflowing_store, tmp_path / "gallery", model="tiny:1", api_key=API_KEY,
               log=tmp_path / "server.log") as server:  # fmt: skip
        url = server.url
        stored = seed_gallery(url, 3, seed=75)
        r = add(url, [bright])
        assert r.status_code == 201, r.text
        stored[r.json()["items"][0]["id"]] = bright
        assert switch(url, "tiny:2").status_code == 202
        models = settled(url)
        failed = models["preparing"]
        assert failed["state"] == "failed" and failed["model"] == "tiny:2", failed
        assert "NonFiniteOutputError" in failed["error"] and "NaN" in failed["error"], failed
        assert models["loaded"]["id"] == "tiny:1"
        for item_id, data in stored.items():
            found_at_zero(url, item_id, data)
