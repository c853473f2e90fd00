"""What the settings name: the served model and its gallery, opened the one way that the
app (at start-up) and the offline commands (`service.indexing`) both use."""

from __future__ import annotations

from core.model_loader import LoadedModel, load_model
from service.config import Settings, model_spec
from service.engine import Engine
from service.gallery import GalleryBackend
from service.gallery import open_gallery as open_location
from service.metrics import Metrics


def load_served_model(
    settings: Settings, spec: str | None = None, precision: str | None = None
) -> LoadedModel:
    """`spec` (default: ALEXNET_MODEL, or the store's only model) at `precision` (default:
    the settings'), on the settings' device, threads and spinning; a model switch names
    the model and precision it loads."""
    return load_model(
        settings.store,
        spec or model_spec(settings),
        precision=precision or settings.precision,
        device=settings.device,
        threads=settings.threads,
        spinning=settings.spinning == "on",
    )


def open_gallery(settings: Settings, loaded: LoadedModel) -> GalleryBackend:
    """The settings' gallery (a folder or a postgresql:// URL), bound to the model that makes
    its vectors."""
    return open_location(
        settings.gallery, exact_max=settings.gallery_exact_max, **loaded.gallery_binding()
    )


async def start_engine(loaded: LoadedModel, settings: Settings, metrics: Metrics) -> Engine:
    """A started batching engine over `loaded` with the settings' batch, wait and queue
    limits and instances, its calls observed in `metrics`: the one the app serves, at
    start-up or after a model switch."""
    engine = Engine(
        loaded,
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
        instances=settings.instances,
        on_batch=metrics.observe_batch,
        on_cpu=metrics.engine_cpu.inc,
    )
    await engine.start()
    return engine
