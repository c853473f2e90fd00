"""The inference engine: one onnxruntime session behind a dynamic batcher.

Lifecycle (as a Triton backend): `start()` once, `infer()` per request, `stop()` at the end.
Batch contract: a request is one or more uint8 (256, 256, 3) images; the engine answers
every request with exactly its own rows of `probs` and `fc7`, in order. Concurrent
requests are concatenated into one session call of at most `max_batch` images (a request
is never split; a request larger than `max_batch` runs alone), gathered for at most
`max_wait_ms`. At most `max_queue` images wait; beyond that `infer` raises `OverloadedError`
at once instead of letting the queue grow. A request whose outputs are not all finite (NaN
or infinity: the model's arithmetic overflowed) gets `NonFiniteOutputError` instead of
its rows, so no NaN reaches a client or the gallery; the other requests of its call get
theirs.

Up to `instances` calls run at once (Triton's instance count), each in its own thread on
the one session (onnxruntime's `run` is thread-safe): the next batch starts as soon as a
call ends, from whatever waits then. On a few cores an int8 model serves more this way,
one intra-op thread per call, than with one call spread over every core (README,
"Performance").
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from core.model_loader import LoadedModel
from core.thread_cpu import CpuMeter


class OverloadedError(RuntimeError):
    """The queue is full: answer 503 with Retry-After."""


class EngineRetiredError(OverloadedError):
    """The engine was replaced by another model's (`retire`): ask the app for the current one.
    A 503 with Retry-After if it reaches a client."""


class NonFiniteOutputError(RuntimeError):
    """The model gave NaN or infinite outputs for an image: a 500, and nothing is stored."""


def _check_finite(loaded: LoadedModel, probs: np.ndarray, fc7: np.ndarray) -> None:
    """Raise `NonFiniteOutputError` unless every image's probs and fc7 are finite."""
    bad = int((~(np.isfinite(probs).all(1) & np.isfinite(fc7).all(1))).sum())
    if bad:
        hint = (" (a float16 overflow: remake the file with `alexnet quantize`, or serve "
                "another precision)" if loaded.precision == "fp16" else "")  # fmt: skip
        raise NonFiniteOutputError(
            f"{loaded.id} ({loaded.precision}) gave NaN or infinite outputs for {bad} of "
            f"{len(probs)} image(s){hint}"
        )


@dataclass
class _Request:
    images: np.ndarray  # (n, 256, 256, 3) uint8
    future: asyncio.Future = field(repr=False)


@dataclass(eq=False)  # compared and hashed by identity: the batches in flight are a set
class _Batch:
    requests: list[_Request]

    @property
    def images(self) -> np.ndarray:
        if len(self.requests) == 1:
            return self.requests[0].images
        return np.concatenate([r.images for r in self.requests])


def _fail(requests: list[_Request], error: BaseException) -> None:
    """Answer each request that still waits with `error` (on the event loop)."""
    for req in requests:
        if not req.future.done():
            req.future.set_exception(error)


class Engine:
    """Dynamic batching over `loaded.session`.

    Each instance is a thread that takes its next batch from the queue itself as soon as
    its call ends; only the answers go back to the event loop. (Handing every batch out
    from the event loop made each call wait for the loop between calls: about 1.8 ms per
    call, 3% of an int8 call on two busy cores; README, "Performance".)

    Args:
        loaded: the model, from `core.model_loader.load_model`.
        max_batch: images per session call.
        max_wait_ms: how long the first request of a batch waits for company (0: not at all;
            requests that arrive while a call runs still share the next call).
        max_queue: images allowed to wait.
        instances: session calls that may run at once, each in its own thread.
        on_batch: called with (images in the batch, seconds of inference) after each call.
        on_cpu: called after each call with the CPU seconds the session used since the last
            one: the calling thread's and onnxruntime's intra-op pool's (`core.thread_cpu`),
            so the service's own CPU is the process's minus this. With several instances
            each call adds its own thread's time and the pool's since the last call.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch: int = 8,
        max_wait_ms: float = 0.0,
        max_queue: int = 64,
        instances: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
        on_cpu: Callable[[float], None] | None = None,
    ) -> None:
        self.loaded = loaded
        if instances < 1:
            raise ValueError(f"instances must be at least 1, got {instances}")
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000, max_queue
        self.instances = instances
        self.on_batch, self.on_cpu = on_batch, on_cpu
        self._pool_cpu = CpuMeter(loaded.pool_threads, caller=False)  # shared by the calls
        self._pool_lock = threading.Lock()
        # The queue and the batches in flight, shared by the event loop (`submit`, `stop`)
        # and the instance threads (`_next_batch`); futures are touched on the loop only.
        self._cond = threading.Condition()
        self._gathering = threading.Lock()  # one instance at a time gathers its next batch
        self._pending: deque[_Request] = deque()
        self._running: set[_Batch] = set()
        self._retired = self._stopped = False
        self._queued_images = 0  # waiting or running; the event loop's count
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []

    @property
    def queue_depth(self) -> int:
        """Images waiting for the engine."""
        return self._queued_images

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One synchronous session call, no batching (tools and tests use it).

        Raises:
            NonFiniteOutputError: an image's outputs are not all finite.
        """
        probs, fc7 = self._session_run(images)
        _check_finite(self.loaded, probs, fc7)
        return probs, fc7

    def _session_run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, fc7 = self.loaded.session.run(["probs", "fc7"], {"images": images})
        return probs, fc7

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(target=self._serve, name=f"engine-{i}", daemon=True)
            for i in range(self.instances)
        ]
        for thread in self._threads:
            thread.start()

    async def retire(self) -> None:
        """Answer every request already queued or running, then stop (a model switch: the
        requests that started with this engine finish with it). Later `infer` calls raise
        `EngineRetiredError`."""
        with self._cond:
            self._retired = True
            self._cond.notify_all()
        await self._join()

    async def stop(self) -> None:
        """Answer every request queued or running with `OverloadedError` now, and wait for
        the calls in flight to end."""
        with self._cond:
            self._stopped = True
            cut = [*self._pending, *(r for b in self._running for r in b.requests)]
            self._pending.clear()
            self._running.clear()
            self._cond.notify_all()
        self._queued_images = 0
        _fail(cut, OverloadedError("the service is shutting down"))
        await self._join()

    async def _join(self) -> None:
        """Wait for the instance threads to end; the answers they sent come first (the
        loop runs its callbacks in order)."""
        threads = [t for t in self._threads if t.is_alive()]
        if threads:
            await asyncio.to_thread(lambda: [t.join() for t in threads])

    async def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 256, 256, 3) uint8 -> probs (n, K), fc7 (n, 4096), batched with other requests."""
        return await self.submit(images)

    def submit(self, images: np.ndarray) -> asyncio.Future:
        """Queue a request now (no await: see `retire`); its future gives (probs, fc7)."""
        if self._loop is None:
            raise RuntimeError("Engine.start() was not called")
        if self._retired:
            raise EngineRetiredError(f"{self.loaded.id} was replaced by another model")
        if self._stopped:
            raise OverloadedError("the service is shutting down")
        n = len(images)
        if self._queued_images + n > self.max_queue and self._queued_images > 0:
            raise OverloadedError(
                f"{self._queued_images} images are waiting for the engine (limit {self.max_queue})"
            )
        future = self._loop.create_future()
        with self._cond:
            self._pending.append(_Request(images, future))
            self._cond.notify()
        self._queued_images += n
        return future

    def _serve(self) -> None:
        """One instance: take a batch, run it, send the answers to the loop; until retired
        with nothing left, or stopped."""
        meter = CpuMeter()  # this thread's clock
        while (batch := self._next_batch()) is not None:
            images = batch.images
            meter.take()  # gathering and concatenating are the service's own work
            start = time.perf_counter()
            try:
                outcome: tuple[np.ndarray, np.ndarray] | Exception = self._session_run(images)
            except Exception as e:  # noqa: BLE001 - every request gets its answer, even a failure
                outcome = e
            seconds = time.perf_counter() - start
            cpu = meter.take()
            with self._pool_lock:
                cpu += self._pool_cpu.take()
            try:
                self._loop.call_soon_threadsafe(self._answer, batch, outcome, seconds, cpu)
            except RuntimeError:  # the loop is closed: nobody waits for these answers
                return

    def _next_batch(self) -> _Batch | None:
        """Wait for a request, give it up to `max_wait` to get company, and take the batch;
        None once stopped, or retired with an empty queue."""
        with self._gathering, self._cond:
            while not self._pending:
                if self._retired or self._stopped:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait
            while (
                not (self._retired or self._stopped)
                and self._waiting_images() < self.max_batch
                and (left := deadline - time.monotonic()) > 0
            ):
                self._cond.wait(left)
            if self._stopped:
                return None
            batch = _Batch(self._take_batch())
            self._running.add(batch)
            return batch

    def _answer(self, batch: _Batch, outcome, seconds: float, cpu: float) -> None:
        """On the loop: every request of `batch` gets its rows, or the call's exception."""
        with self._cond:
            if batch not in self._running:  # `stop` has answered it
                return
            self._running.discard(batch)
        images = sum(len(r.images) for r in batch.requests)
        self._queued_images -= images
        if isinstance(outcome, Exception):
            _fail(batch.requests, outcome)
            return
        if self.on_batch is not None:
            self.on_batch(images, seconds)
        if self.on_cpu is not None:
            self.on_cpu(cpu)
        probs, fc7 = outcome
        row = 0
        for req in batch.requests:
            rows = probs[row : row + len(req.images)], fc7[row : row + len(req.images)]
            row += len(req.images)
            if req.future.done():  # a cancelled request (client gone) needs no answer
                continue
            try:
                _check_finite(self.loaded, *rows)
            except NonFiniteOutputError as e:  # this request's images only
                req.future.set_exception(e)
            else:
                req.future.set_result(rows)

    def _waiting_images(self) -> int:
        return sum(len(r.images) for r in self._pending)

    def _take_batch(self) -> list[_Request]:
        """Requests from the front, whole, up to max_batch images (at least one request)."""
        batch = [self._pending.popleft()]
        count = len(batch[0].images)
        while self._pending and count + len(self._pending[0].images) <= self.max_batch:
            req = self._pending.popleft()
            batch.append(req)
            count += len(req.images)
        return batch
