"""The dynamic batcher, with the real exported model."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.model_loader import load_model
from service.engine import Engine, NonFiniteOutputError, OverloadedError


@pytest.fixture(scope="module")
def loaded(exported: Path):
    return load_model(exported.parent.parent, "tiny", precision="fp32", device="cpu", threads=2)


class TimedSession:
    """The real session, with the start and end of each `run` written down."""

    def __init__(self, session) -> None:
        self.session, self.spans, self._lock = session, [], threading.Lock()

    def run(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.session.run(*args, **kwargs)
        with self._lock:
            self.spans.append((start, time.perf_counter()))
        return out


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 256, 256, 3), dtype=np.uint8)


def _infer_together(engine: Engine, requests: list[np.ndarray]) -> list:
    """Start `engine`, submit every request at once, stop it; the answers in order."""

    async def scenario():
        await engine.start()
        try:
            return await asyncio.gather(*(engine.infer(r) for r in requests))
        finally:
            await engine.stop()

    return asyncio.run(scenario())


def _assert_answers_as_alone(loaded, requests: list[np.ndarray], answers: list) -> None:
    """Each request got the rows one unbatched session call gives for its images."""
    for images, (probs, fc7) in zip(requests, answers, strict=True):
        ref_probs, ref_fc7 = Engine(loaded).run(images)
        assert probs.shape == (len(images), 4) and fc7.shape == (len(images), 4096)
        np.testing.assert_allclose(probs, ref_probs, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(fc7, ref_fc7, rtol=1e-4, atol=1e-5)


def test_concurrent_requests_share_a_call_and_get_their_own_rows(loaded) -> None:
    batches: list[int] = []
    requests = [_images(n, seed) for seed, n in enumerate([1, 2, 1, 3])]

    engine = Engine(loaded, max_batch=8, max_wait_ms=200, on_batch=lambda n, _: batches.append(n))
    answers = _infer_together(engine, requests)
    assert batches == [7]  # all four requests in one session call
    _assert_answers_as_alone(loaded, requests, answers)


def test_requests_are_never_split_and_large_ones_run_alone(loaded) -> None:
    batches: list[int] = []

    async def scenario():
        engine = Engine(
            loaded, max_batch=4, max_wait_ms=100, on_batch=lambda n, _: batches.append(n)
        )
        await engine.start()
        try:
            await asyncio.gather(
                engine.infer(_images(3, 0)),
                engine.infer(_images(3, 1)),
                engine.infer(_images(6, 2)),
            )
        finally:
            await engine.stop()

    asyncio.run(scenario())
    assert sorted(batches) == [3, 3, 6]


def test_a_full_queue_answers_overloaded_at_once(loaded) -> None:
    async def scenario():
        engine = Engine(loaded, max_batch=1, max_wait_ms=0, max_queue=2)
        await engine.start()
        try:
            return await asyncio.gather(
                *(engine.infer(_images(1, i)) for i in range(6)), return_exceptions=True
            )
        finally:
            await engine.stop()

    results = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, OverloadedError)]
    served = [r for r in results if isinstance(r, tuple)]
    assert refused and served and len(refused) + len(served) == 6
    assert "limit 2" in str(refused[0])


def test_without_waiting_requests_that_arrive_while_the_engine_runs_share_the_next_call(
    loaded,
) -> None:
    batches: list[int] = []

    async def scenario():
        engine = Engine(loaded, max_batch=8, max_wait_ms=0, on_batch=lambda n, _: batches.append(n))
        await engine.start()
        try:
            first = asyncio.ensure_future(engine.infer(_images(1, 0)))
            await asyncio.sleep(0.03)  # the first call is running now (it takes ~100 ms)
            later = [engine.infer(_images(1, seed)) for seed in (1, 2, 3)]
            await asyncio.gather(first, *later)
        finally:
            await engine.stop()

    asyncio.run(scenario())
    assert batches == [1, 3]  # no wait at idle; the three later ones batched behind it


@pytest.mark.parametrize("instances", [1, 2])
def test_the_engine_counts_the_sessions_cpu_time(loaded, instances: int) -> None:
    """`on_cpu` gets the session's CPU seconds per call (calling threads + onnxruntime's
    pool): together about what the process spent, as nothing else runs here."""
    spent: list[float] = []

    async def scenario():
        engine = Engine(loaded, max_batch=4, instances=instances, on_cpu=spent.append)
        await engine.start()
        try:
            for seeds in ([0, 1], [2, 3], [4, 5]):
                await asyncio.gather(*(engine.infer(_images(4, seed)) for seed in seeds))
        finally:
            await engine.stop()

    process = time.process_time()
    asyncio.run(scenario())
    process = time.process_time() - process
    assert len(spent) == 6 and all(s > 0 for s in spent)
    assert 0.5 * process < sum(spent) <= process + 0.02, (spent, process)


@pytest.mark.parametrize("instances", [1, 2])
def test_instances_is_how_many_session_calls_run_at_once(loaded, instances: int) -> None:
    timed = TimedSession(loaded.session)
    requests = [_images(1, seed) for seed in range(4)]

    engine = Engine(dataclasses.replace(loaded, session=timed), max_batch=1, instances=instances)
    answers = _infer_together(engine, requests)
    assert len(timed.spans) == 4
    # most calls running at any moment, from the calls' own start and end times
    events = sorted([(s, 1) for s, _ in timed.spans] + [(e, -1) for _, e in timed.spans])
    running = np.cumsum([step for _, step in events])
    assert running.max() == instances
    _assert_answers_as_alone(loaded, requests, answers)


def test_the_next_call_starts_without_the_event_loop(loaded) -> None:
    """An instance takes its next batch itself when a call ends: queued requests keep the
    session busy while the event loop is held up (parsing, decoding, answering others)."""
    timed = TimedSession(loaded.session)

    async def scenario():
        engine = Engine(dataclasses.replace(loaded, session=timed), max_batch=1)
        await engine.start()
        try:
            futures = [engine.submit(_images(1, seed)) for seed in range(3)]
            time.sleep(1.5)  # the loop is blocked: nothing can be handed out from it
            blocked_until = time.perf_counter()
            await asyncio.gather(*futures)
            return blocked_until
        finally:
            await engine.stop()

    blocked_until = asyncio.run(scenario())
    assert len(timed.spans) == 3
    assert all(end < blocked_until for _, end in timed.spans), (timed.spans, blocked_until)


def test_stop_answers_the_calls_in_flight_and_retire_waits_for_them(loaded) -> None:
    async def scenario():
        stopped = Engine(loaded, max_batch=1, instances=2)
        await stopped.start()
        cut = [asyncio.ensure_future(stopped.infer(_images(1, i))) for i in range(3)]
        await asyncio.sleep(0.03)  # two calls are running, one request waits
        await stopped.stop()
        cut = await asyncio.gather(*cut, return_exceptions=True)

        retired = Engine(loaded, max_batch=1, instances=2)
        await retired.start()
        finished = [asyncio.ensure_future(retired.infer(_images(1, i))) for i in range(3)]
        await asyncio.sleep(0.03)
        await retired.retire()
        assert all(f.done() for f in finished)
        return cut, [f.result() for f in finished]

    cut, finished = asyncio.run(scenario())
    assert all(isinstance(r, OverloadedError) for r in cut), cut
    assert "shutting down" in str(cut[0])
    assert [probs.shape for probs, _ in finished] == [(1, 4)] * 3


def test_instances_must_be_positive(loaded) -> None:
    with pytest.raises(ValueError, match="instances must be at least 1"):
        Engine(loaded, instances=0)


def test_an_image_with_non_finite_outputs_is_refused_and_the_others_are_answered(
    overflowing_store: Path,
) -> None:
    overflowing = load_model(overflowing_store, "tiny:2", precision="fp32", device="cpu")
    dark, bright = np.full((1, 256, 256, 3), 20, np.uint8), np.full((1, 256, 256, 3), 200, np.uint8)
    engine = Engine(overflowing, max_batch=8, max_wait_ms=200)

    async def scenario():
        await engine.start()
        try:  # one call: the three requests wait together
            return await asyncio.gather(*(engine.infer(r) for r in (dark, bright, dark)),
                                        return_exceptions=True)  # fmt: skip
        finally:
            await engine.stop()

    first, refused, last = asyncio.run(scenario())
    assert isinstance(refused, NonFiniteOutputError)
    assert "tiny:2 (fp32) gave NaN or infinite outputs for 1 of 1 image(s)" in str(refused)
    for probs, fc7 in (first, last):
        assert np.isfinite(probs).all() and np.isfinite(fc7).all()
        np.testing.assert_allclose(fc7, np.sqrt(130), rtol=1e-6)  # sqrt(150 - 20)
    with pytest.raises(NonFiniteOutputError, match="for 1 of 2 image"):  # tools: `run`
        engine.run(np.concatenate([dark, bright]))
