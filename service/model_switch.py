"""Switching the served model while serving: load another model beside the one in use,
re-embed the gallery's stored images with it in the background, and switch atomically.

    POST /models/switch {"model": "tiny:2"}
      loading       the new model loaded (same device and threads) in a worker thread, its
                    contract checked with one probe call; the old model answers everything
      re-embedding  every stored image decoded (the service's limits) and embedded by the new
                    model's own Engine, a chunk at a time; items added through this replica
                    meanwhile are embedded by both models (POST /gallery `note`s the new
                    vector); a few catch-up passes embed items added elsewhere
      switching     `GalleryBackend.switch_vectors`: every gallery write held off (the folder's
                    lock; PostgreSQL's exclusive projection lock, which every replica's insert
                    and delete takes in shared mode), the last stragglers embedded, then every
                    vector and the binding replaced in one transaction
      -> the app's engine becomes the new one; the old one answers what it has queued, then
         stops (`Engine.retire`)
      failed        any exception (missing or corrupt file, contract, out of memory, an image
                    that no longer decodes or that the new model gives NaN for, another
                    replica switched first): the old model
                    keeps serving, `GET /models` says why until the next switch

A request keeps the engine it started with, and gives the gallery the sha256 of the model
that made its vector (`add`/`search(model_sha256=...)`): a vector never meets a gallery of
another model. If the binding changed under a request, `replaced` waits for the switch to
settle and the router repeats the request once with the current engine, or answers 503 with
Retry-After.

Replicas on one PostgreSQL gallery follow a switch made by any of them (`follow_forever`):
each polls the gallery's binding every FOLLOW_INTERVAL_S, and when it names another model it
loads that model (its id records name, version and precision) from its own store, checks that
the file is the one the vectors were made by, and swaps. Until then its searches and adds
answer 503 with Retry-After (the binding check) while /predict answers with the old model.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from starlette.concurrency import run_in_threadpool

from core import constants as C
from core import store
from core.model_loader import LoadedModel, ModelLoadError
from core.store import now_iso
from service.config import Settings
from service.engine import Engine, OverloadedError
from service.gallery import (
    GalleryBackend,
    GalleryModelMismatchError,
    GalleryUnavailableError,
    ModelBinding,
    is_database_url,
    stored_model,
)
from service.gallery import open_gallery as open_location
from service.metrics import Metrics
from service.reembed import BATCH, embed_stored
from service.resources import load_served_model, open_gallery, start_engine

log = logging.getLogger(__name__)

FOLLOW_INTERVAL_S = 1.0  # how often a replica reads the gallery's binding
FOLLOW_RETRY_S = 30.0  # before a replica tries again to load a model it failed to load
SETTLE_WAIT_S = 30.0  # how long a request whose gallery switched waits for the new engine
CATCH_UP_PASSES = 3  # passes over items added elsewhere before the locked last step
LOCKED_STRAGGLERS = 32  # at most this many left for the locked last step, if passes allow

State = Literal["loading", "re-embedding", "switching", "done", "failed"]


class SwitchConflictError(RuntimeError):
    """A switch is already running, or the model asked for is the one in use (409)."""


@dataclass
class SwitchJob:
    """One switch (asked for here) or follow (made by another replica), and how it stands."""

    model: str  # NAME[:VERSION] as asked, or as the gallery's binding names it
    precision: str
    kind: Literal["switch", "follow"]
    target_sha256: str | None = None  # a follow: the file the gallery's vectors were made by
    state: State = "loading"
    model_id: str | None = None  # the loaded model's "name:version/precision"
    done: int = 0
    total: int = 0
    error: str | None = None
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    engine: Engine | None = field(default=None, repr=False)
    pending: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _embedding_since: float | None = field(default=None, repr=False)
    _embedded: int = field(default=0, repr=False)  # by the job itself, for the ETA
    _late: int = field(default=0, repr=False)  # embedded at the last step

    @property
    def running(self) -> bool:
        return self.state not in ("done", "failed")

    @property
    def eta_s(self) -> float | None:
        """Seconds left for the re-embedding at its pace so far (None before a first chunk)."""
        if self.state != "re-embedding" or not self._embedded or self._embedding_since is None:
            return None
        pace = (time.monotonic() - self._embedding_since) / self._embedded
        return round(max(self.total - self.done, 0) * pace, 1)

    def accepting(self) -> Engine | None:
        """The new model's engine while new items should be embedded by it too."""
        return self.engine if self.state == "re-embedding" else None

    def note(self, ids: list[str], vectors: np.ndarray) -> None:
        """Items just added (through this replica) with the new model's vectors."""
        if self.state in ("re-embedding", "switching"):
            self._count(dict(zip(ids, vectors, strict=True)))

    def embedded(self, vectors: dict[str, np.ndarray]) -> None:
        """Vectors the job made itself."""
        self._count(vectors)
        self._embedded += len(vectors)

    def _count(self, vectors: dict[str, np.ndarray]) -> None:
        """Add to `pending`; `done` counts distinct items, `total` grows with new ones."""
        self.pending.update(vectors)
        self.done = len(self.pending) + self._late
        self.total = max(self.total, self.done)

    def late(self, vectors: dict[str, np.ndarray]) -> None:
        """Vectors made at the last step, for items `pending` lacks (not kept in it)."""
        self._late += len(vectors)
        self._count({})


def check_contract(loaded: LoadedModel, dim: int) -> None:
    """One probe call: probs (1, classes) and fc7 (1, dim), finite (ModelLoadError if not).
    `load_model` checked the declared names and shapes; this checks what the file computes
    and the gallery's vector length."""
    probs, fc7 = loaded.session.run(
        [C.OUTPUT_NAMES[0], C.OUTPUT_NAMES[1]],
        {C.INPUT_NAME: np.zeros((1, C.IMAGE_SIZE, C.IMAGE_SIZE, 3), np.uint8)},
    )
    want = {"probs": (1, loaded.manifest.num_classes), "fc7": (1, dim)}
    got = {"probs": probs.shape, "fc7": fc7.shape}
    if got != want or not (np.isfinite(probs).all() and np.isfinite(fc7).all()):
        raise ModelLoadError(
            f"{loaded.id} computes {got} on a probe image, expected {want} with finite values"
        )


def spec_of(binding: ModelBinding, default_precision: str) -> tuple[str, str]:
    """(NAME:VERSION, precision) of a binding's model id ("name:version/precision")."""
    spec, slash, precision = binding.model_id.rpartition("/")
    return (spec, precision) if slash else (binding.model_id, default_precision)


def open_served_gallery(settings: Settings, loaded: LoadedModel) -> GalleryBackend:
    """The service's gallery. A database gallery bound to another model than `loaded` (a
    switch made while this replica was down) is opened with its own binding: the replica then
    follows it like a running one (`ModelSwitcher.follow_forever`), its gallery calls
    answering 503 until it has loaded that model. A folder gallery is refused as before
    (GalleryModelMismatchError: serve its model or run `alexnet reindex`)."""
    try:
        return open_gallery(settings, loaded)
    except GalleryModelMismatchError:
        if not is_database_url(settings.gallery):
            raise
        recorded = stored_model(settings.gallery)
        if recorded is None:
            raise
        log.warning(
            "the gallery holds vectors of %s, not of %s (ALEXNET_MODEL): following it",
            recorded.model_id, loaded.gallery_binding()["model_id"],
        )  # fmt: skip
        return open_location(
            settings.gallery, exact_max=settings.gallery_exact_max,
            model_sha256=recorded.model_sha256, model_id=recorded.model_id, dim=recorded.dim,
        )  # fmt: skip


class ServedState(Protocol):
    """What a switch reads and replaces of the app's state (`service.deps.AppState`)."""

    settings: Settings
    metrics: Metrics
    engine: Engine | None
    gallery: GalleryBackend | None


class ModelSwitcher:
    """The switches of one app: at most one job at a time; the last one kept for /models."""

    def __init__(self, state: ServedState) -> None:
        self.state = state
        self.job: SwitchJob | None = None
        self._settled = asyncio.Event()
        self._settled.set()
        self._tasks: set[asyncio.Task] = set()
        self._failed_follow: tuple[str, float] | None = None  # (sha256, when)
        self._closing = threading.Event()

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def accepting(self) -> SwitchJob | None:
        """The job whose model should embed new items too, if any."""
        job = self.job
        return job if job is not None and job.accepting() is not None else None

    # ----------------------------------------------------------------- starting

    def start(self, model: str, precision: str | None) -> SwitchJob:
        """Start switching to `model` (the caller checks that the model and the gallery are
        loaded): checked here (FileNotFoundError: not in the store, ValueError: a bad spec,
        SwitchConflictError: busy), run in the background."""
        s = self.state.settings
        if self.state.engine is None or self.state.gallery is None:
            raise RuntimeError("start() needs the model and the gallery loaded")
        if self.running:
            raise SwitchConflictError(
                f"a switch to {self.job.model} is already running ({self.job.state})"
            )
        folder = store.resolve(s.store, model)  # FileNotFoundError / ValueError
        manifest = store.read_manifest(folder)
        precision = precision or s.precision
        current = self.state.engine.loaded
        if manifest.id == current.id and precision in ("auto", current.precision):
            raise SwitchConflictError(f"{manifest.id} ({current.precision}) is already in use")
        return self._launch(SwitchJob(model=manifest.id, precision=precision, kind="switch"))

    def _launch(self, job: SwitchJob) -> SwitchJob:
        self.job = job
        self._settled.clear()
        self._publish()
        task = asyncio.create_task(self._run(job), name=f"model-{job.kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    # ----------------------------------------------------------------- waiting

    async def replaced(self, engine: Engine) -> bool:
        """After a request found the gallery bound to another model than `engine`'s: True if
        the app serves another engine, waiting for this replica's switch if it is in its
        last step (its gallery switched, its engine about to). A replica still following
        another's switch answers at once (False: 503 with Retry-After)."""
        job = self.job
        last_step = job is not None and job.kind == "switch" and job.state == "switching"
        if self.state.engine is engine and last_step:
            try:
                await asyncio.wait_for(self._settled.wait(), SETTLE_WAIT_S)
            except TimeoutError:
                pass
        return self.state.engine is not None and self.state.engine is not engine

    # ----------------------------------------------------------------- the job

    async def _run(self, job: SwitchJob) -> None:
        s, metrics = self.state.settings, self.state.metrics
        old, gallery = self.state.engine, self.state.gallery
        assert old is not None and gallery is not None
        from_sha256 = old.loaded.gallery_binding()["model_sha256"]
        try:
            loaded = await run_in_threadpool(load_served_model, s, job.model, job.precision)
            job.model_id = loaded.gallery_binding()["model_id"]
            await run_in_threadpool(check_contract, loaded, gallery.dim)
            binding = loaded.gallery_binding()
            if job.kind == "switch" and binding["model_sha256"] == from_sha256:
                raise SwitchConflictError(f"{job.model_id} is the file already in use")
            if job.target_sha256 not in (None, binding["model_sha256"]):
                raise ModelLoadError(
                    f"the gallery's vectors were made by {job.model} with sha256 "
                    f"{job.target_sha256[:12]}..., but this replica's store holds "
                    f"{binding['model_sha256'][:12]}... under that name"
                )
            job.engine = await start_engine(loaded, s, metrics)
            if job.kind == "switch":
                await self._reembed(job, gallery, from_sha256, binding)
            else:
                target = ModelBinding(binding["model_id"], binding["model_sha256"], gallery.dim)
                await run_in_threadpool(gallery.rebind, target)
            # No await from here on: the swap is atomic for every request.
            self.state.engine = job.engine
            metrics.serving(loaded.id, loaded.precision, loaded.provider)
            job.state = "done"
            metrics.switches.labels(job.kind, "succeeded").inc()
            log.info("model %s: now serving %s", job.kind, job.model_id)
            self._spawn(old.retire())
        except Exception as e:  # noqa: BLE001 - the old model keeps serving; /models says why
            job.state, job.error = "failed", f"{type(e).__name__}: {e}"
            metrics.switches.labels(job.kind, "failed").inc()
            log.error("model %s to %s failed, still serving %s: %s",
                      job.kind, job.model, old.loaded.id, job.error)  # fmt: skip
            if job.engine is not None:
                self._spawn(job.engine.retire())
            if job.target_sha256 is not None:
                self._failed_follow = (job.target_sha256, time.monotonic())
        finally:
            job.finished_at = now_iso()
            job.pending = {}
            job.engine = None if job.state == "failed" else job.engine
            self._settled.set()
            self._publish()

    async def _reembed(
        self, job: SwitchJob, gallery: GalleryBackend, from_sha256: str, binding: dict
    ) -> None:
        """re-embedding, then switching (see the module docstring)."""
        engine = job.engine
        assert engine is not None
        loop = asyncio.get_running_loop()
        settings = self.state.settings

        def fc7_of(pixels: np.ndarray) -> np.ndarray:
            """The new model's engine, called from the job's thread (its batcher also serves
            the new items' second embedding); a full queue is waited out."""
            while True:
                future = asyncio.run_coroutine_threadsafe(engine.infer(pixels), loop)
                try:
                    while True:
                        try:
                            return future.result(timeout=1)[1]
                        except TimeoutError:
                            if self._closing.is_set():
                                future.cancel()
                                raise RuntimeError("the service is shutting down") from None
                except OverloadedError:
                    if self._closing.is_set():
                        raise
                    time.sleep(0.1)

        def embed_all() -> None:
            for chunk in _chunks(gallery.iter_images(), job, BATCH):
                if self._closing.is_set():
                    raise RuntimeError("the service is shutting down")
                job.embedded(embed_stored(chunk, fc7_of, settings))
                self._publish()
            for _ in range(CATCH_UP_PASSES):  # items added elsewhere (another replica)
                missing = [i for i in gallery.ids() if i not in job.pending]
                if len(missing) <= LOCKED_STRAGGLERS:
                    return
                for start in range(0, len(missing), BATCH):
                    ids = missing[start : start + BATCH]
                    images = [(i, im.data) for i in ids if (im := gallery.image(i)) is not None]
                    job.embedded(embed_stored(images, fc7_of, settings))
                    self._publish()

        job.state, job.total = "re-embedding", await run_in_threadpool(len, gallery)
        job._embedding_since = time.monotonic()
        self._publish()
        await run_in_threadpool(embed_all)
        job.state = "switching"
        self._publish()

        def stragglers(images: list[tuple[str, bytes]]) -> dict[str, np.ndarray]:
            # the gallery's write lock is held: straight to the session, no batcher
            made = embed_stored(images, lambda px: engine.run(px)[1], settings)
            job.late(made)
            return made

        late = await run_in_threadpool(
            gallery.switch_vectors, job.pending, stragglers, from_sha256=from_sha256, **binding
        )
        log.info("gallery %s switched to %s (%d item(s), %d embedded at the last step)",
                 gallery.location, binding["model_id"], job.total, late)  # fmt: skip

    # ----------------------------------------------------------------- following

    async def follow_forever(self) -> None:
        """Poll the gallery's binding; follow a switch another replica made."""
        while True:
            await asyncio.sleep(FOLLOW_INTERVAL_S)
            try:
                await self.follow_once()
            except GalleryUnavailableError:
                pass  # the gallery endpoints say so; try again
            except Exception as e:  # noqa: BLE001 - keep polling
                log.warning("following the gallery's model: %s", e)

    async def follow_once(self) -> SwitchJob | None:
        """Start following the gallery's model if it is not the one served; the job, if any."""
        engine, gallery = self.state.engine, self.state.gallery
        if engine is None or gallery is None or self.running:
            return None
        binding = await run_in_threadpool(gallery.active_binding)
        if self.running or self.state.engine is not engine:
            return None
        if binding.model_sha256 == engine.loaded.gallery_binding()["model_sha256"]:
            return None
        failed = self._failed_follow
        if failed and failed[0] == binding.model_sha256:
            if time.monotonic() - failed[1] < FOLLOW_RETRY_S:
                return None
        spec, precision = spec_of(binding, self.state.settings.precision)
        log.info("the gallery now holds vectors of %s: loading it", binding.model_id)
        job = SwitchJob(model=spec, precision=precision, kind="follow",
                        target_sha256=binding.model_sha256)  # fmt: skip
        return self._launch(job)

    # ----------------------------------------------------------------- plumbing

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _publish(self) -> None:
        """The job's progress into the metrics."""
        m, job = self.state.metrics, self.job
        running = job is not None and job.running
        m.switch_running.set(1 if running else 0)
        m.switch_done.set(job.done if job else 0)
        m.switch_total.set(job.total if job else 0)
        eta = job.eta_s if job else None
        m.switch_eta.set(eta if eta is not None else 0)

    async def close(self) -> None:
        """Stop a running job (at shutdown): the old model stays, nothing is switched."""
        self._closing.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=30)
        job = self.job
        if job is not None and job.engine is not None and job.engine is not self.state.engine:
            await job.engine.stop()


def _chunks(
    images: Iterator[tuple[str, bytes]], job: SwitchJob, size: int
) -> Iterator[list[tuple[str, bytes]]]:
    """The stored images the job has no vector for yet, `size` at a time."""
    chunk: list[tuple[str, bytes]] = []
    for item_id, data in images:
        if item_id in job.pending:
            continue
        chunk.append((item_id, data))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
