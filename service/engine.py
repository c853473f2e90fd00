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
from concurrent.futures import ThreadPoolExecutor
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


def _fail(batch: list[_Request], error: BaseException) -> None:
    """Answer each request of `batch` that still waits with `error`."""
    for req in batch:
        if not req.future.done():
            req.future.set_exception(error)


class Engine:
    """Dynamic batching over `loaded.session`.

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
        self._thread = threading.local()  # each call thread's own CpuMeter
        self._pending: deque[_Request] = deque()
        self._queued_images = 0
        self._wakeup: asyncio.Event | None = None
        self._free: asyncio.Semaphore | None = None  # instances not running a call
        self._task: asyncio.Task | None = None
        self._calls: set[asyncio.Task] = set()
        self._retired = False
        # one thread per instance: the session spreads each call over its intra-op threads
        self._executor = ThreadPoolExecutor(max_workers=instances, thread_name_prefix="engine")

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

    def _run_counted(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """The session call, in an executor thread, and the CPU seconds of this thread since
        its last call plus the intra-op pool's since any thread's last call."""
        probs, fc7 = self._session_run(images)
        meter = getattr(self._thread, "meter", None)
        if meter is None:
            meter = self._thread.meter = CpuMeter()  # this thread's clock, from its start
        used = meter.take()
        with self._pool_lock:
            used += self._pool_cpu.take()
        return probs, fc7, used

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._free = asyncio.Semaphore(self.instances)
        self._task = asyncio.create_task(self._loop(), name="engine-batcher")

    async def retire(self) -> None:
        """Answer every request already queued or running, then stop (a model switch: the
        requests that started with this engine finish with it). Later `infer` calls raise
        `EngineRetiredError`."""
        self._retired = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await asyncio.wait([self._task])
        self._executor.shutdown(wait=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for call in list(self._calls):  # their requests get OverloadedError (`_call`)
            call.cancel()
        await asyncio.gather(*self._calls, return_exceptions=True)
        for req in self._pending:
            if not req.future.done():
                req.future.set_exception(OverloadedError("the service is shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=True)

    async def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 256, 256, 3) uint8 -> probs (n, K), fc7 (n, 4096), batched with other requests."""
        return await self.submit(images)

    def submit(self, images: np.ndarray) -> asyncio.Future:
        """Queue a request now (no await: see `retire`); its future gives (probs, fc7)."""
        if self._task is None or self._wakeup is None:
            raise RuntimeError("Engine.start() was not called")
        if self._retired:
            raise EngineRetiredError(f"{self.loaded.id} was replaced by another model")
        n = len(images)
        if self._queued_images + n > self.max_queue and self._queued_images > 0:
            raise OverloadedError(
                f"{self._queued_images} images are waiting for the engine (limit {self.max_queue})"
            )
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(images, future))
        self._queued_images += n
        self._wakeup.set()
        return future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._retired:
                    break
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._free.acquire()  # an instance is free; requests gather meanwhile
            deadline = loop.time() + self.max_wait
            while self._waiting_images() < self.max_batch and (left := deadline - loop.time()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except TimeoutError:
                    break
            call = asyncio.create_task(self._call(self._take_batch()), name="engine-call")
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)
        await asyncio.gather(*self._calls)  # retired: the calls in flight finish

    async def _call(self, batch: list[_Request]) -> None:
        """One session call for `batch`, on a free instance; every request gets its rows,
        or the call's exception."""
        images = batch[0].images if len(batch) == 1 else np.concatenate([r.images for r in batch])
        start = time.perf_counter()
        try:
            probs, fc7, cpu = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run_counted, images
            )
        except asyncio.CancelledError:  # `stop`
            _fail(batch, OverloadedError("the service is shutting down"))
            raise
        except Exception as e:  # noqa: BLE001 - every request gets its answer, even a failure
            _fail(batch, e)
            return
        finally:
            self._queued_images -= len(images)
            self._free.release()
        if self.on_batch is not None:
            self.on_batch(len(images), time.perf_counter() - start)
        if self.on_cpu is not None:
            self.on_cpu(cpu)
        row = 0
        for req in batch:
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
