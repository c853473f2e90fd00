"""Service settings: one pydantic-settings object, from ALEXNET_* variables or `alexnet serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core import store
from core.constants import GALLERY_EXACT_MAX


class Settings(BaseSettings):
    """Every field is also the environment variable ALEXNET_<FIELD> (e.g. ALEXNET_PORT)."""

    model_config = SettingsConfigDict(env_prefix="ALEXNET_", extra="ignore")

    store: Path = Field(Path("model_store"), description="model store folder")
    model: str | None = Field(
        None, description="NAME[:VERSION]; default: the only model in the store"
    )
    precision: Literal["auto", "fp32", "fp16", "int8"] = Field(
        "auto", description="which model file"
    )
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="where onnxruntime runs")
    threads: int | None = Field(
        None, ge=1, description="onnxruntime intra-op threads (default: onnxruntime's)"
    )
    spinning: Literal["on", "off"] = Field(
        "off",
        description="whether onnxruntime's intra-op threads busy-wait for work "
        "(session.intra_op.allow_spinning, on in onnxruntime): on a few cores the spinning "
        "takes the CPU that decoding and HTTP need, and makes each image cost more CPU",
    )
    gallery: str = Field(
        "gallery",
        description="gallery: a folder (embedded SQLite + FAISS, one process) or a "
        "postgresql:// URL (PostgreSQL + pgvector, shared by replicas)",
    )
    gallery_exact_max: int = Field(
        GALLERY_EXACT_MAX,
        ge=0,
        description="up to this many gallery items the search is exact; above, a compressed "
        "index (PCA + IVF + 8-bit codes) with exact re-ranking",
    )
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=1, le=65535, description="port to listen on")
    keep_alive_s: int = Field(
        75,
        ge=1,
        le=3600,
        description="seconds an idle keep-alive connection stays open; keep it above the idle "
        "timeout of the clients and proxies in front (httpx: 5, nginx upstream: 60), or a "
        "request they send just as the server closes the connection fails",
    )
    api_key: SecretStr | None = Field(
        None, description="when set, gallery writes need 'Authorization: Bearer <key>'"
    )

    max_batch: int = Field(8, ge=1, le=256, description="images per engine call")
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="how long an idle engine waits for more images before a call (0: none; "
        "images that arrive while a call runs are batched into the next one anyway)",
    )
    max_queue: int = Field(64, ge=1, description="images waiting for the engine; beyond it 503")
    instances: int = Field(
        1,
        ge=1,
        le=64,
        description="engine calls that run at once, each in its own thread on the one session "
        "(which shares its --threads among them): on a few CPU cores an int8 model serves more "
        "with one call per core and --threads 1 than with one call over every core",
    )
    max_images_per_request: int = Field(16, ge=1, description="image parts in one request")
    max_image_bytes: int = Field(20 * 2**20, ge=1024, description="bytes of one uploaded image")
    max_image_pixels: int = Field(40_000_000, ge=65_536, description="pixels of one uploaded image")
    max_metadata_bytes: int = Field(
        16_384, ge=2, description="bytes of a gallery item's metadata JSON"
    )

    @property
    def max_request_bytes(self) -> int:
        """A larger request is refused (413): from its Content-Length before its body is read,
        or, without one, as soon as this many bytes have come in (`service.body_limit`)."""
        return self.max_images_per_request * self.max_image_bytes + self.max_metadata_bytes + 65_536


def model_spec(settings: Settings) -> str:
    """The model to serve: ALEXNET_MODEL, or the only model name in the store."""
    if settings.model:
        return settings.model
    names = store.list_names(settings.store)
    if len(names) != 1:
        raise FileNotFoundError(
            f"set ALEXNET_MODEL (or --model): the store {settings.store} holds "
            f"{', '.join(names) if names else 'no model'}"
        )
    return names[0]


def check_model_choice(settings: Settings) -> None:
    """Refuse, at start-up, a store whose model to serve cannot be decided: several models
    and no ALEXNET_MODEL. No later moment would decide it, so a service that started anyway
    would stay unready for good. (An empty store is left to the background load, which
    answers 503 and says why: a model may be exported into it.)

    Raises:
        FileNotFoundError: the message names the models and the setting to choose one.
    """
    if not settings.model and len(store.list_names(settings.store)) > 1:
        model_spec(settings)  # raises, naming them
