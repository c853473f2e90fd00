"""A real `alexnet serve` process on a loopback port, with a model exported in this session."""

from __future__ import annotations

import contextlib
import functools
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from alexnet import local_server

API_KEY = "test-key-123"
# Small limits, so that crossing them is cheap (ALEXNET_* settings of the test servers).
SMALL_LIMITS = {"max_image_bytes": "2000000", "max_image_pixels": "4000000",
                "max_images_per_request": "4"}  # fmt: skip
REPO = Path(__file__).parents[2]


# the tests' servers: two onnxruntime threads (the machine's cores), started in the repository
serve = functools.partial(local_server.serve, cwd=REPO, threads="2")


@contextlib.contextmanager
def running_server(
    store: Path,
    gallery: Path,
    wait_ready: bool = True,
    command: list[str] | None = None,
    cwd: Path = REPO,
    **env: str,
) -> Iterator[str]:
    """`serve`, yielding only the base URL."""
    with serve(store, gallery, wait_ready=wait_ready, command=command, cwd=cwd, **env) as server:
        yield server.url


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def sample_images(synth_root: Path) -> list[tuple[str, bytes]]:
    """(class name, file bytes) of the validation images, one JPEG or PNG file each."""
    return [(p.parent.name, p.read_bytes()) for p in sorted((synth_root / "val").rglob("*.*"))]


@pytest.fixture(scope="module")
def server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with an API key, SMALL_LIMITS and an empty gallery."""
    gallery = tmp_path_factory.mktemp("server") / "gallery"
    with running_server(exported.parent.parent, gallery, api_key=API_KEY, **SMALL_LIMITS) as url:
        yield url


def settled_readiness(url: str, timeout: float = 60) -> httpx.Response:
    """/health/ready once loading has finished, successfully or not."""
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{url}/health/ready")
        settled = r.status_code == 200 or "loading" not in r.json()["detail"]
        if settled or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


@pytest.fixture(scope="session")
def overflowing_store(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with `exported` as tiny:1 and a tiny:2 that follows the contract but gives NaN
    for bright images (mean pixel above 150: probs and fc7 come from sqrt(150 - mean)), as
    an overflowing model does for some inputs; dark images, the black probe image of a
    model switch among them, get finite outputs. A real ONNX graph, run by onnxruntime."""
    import shutil

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from core import store
    from core.durable import write_json_atomic

    root = tmp_path_factory.mktemp("overflowing") / "store"
    shutil.copytree(exported.parent.parent, root)
    folder = root / "tiny" / "2"
    shutil.copytree(root / "tiny" / "1", folder)
    manifest = store.read_manifest(folder)
    k = manifest.num_classes
    consts = {
        "axes": np.array([1, 2, 3], np.int64), "flat": np.array([-1, 1], np.int64),
        "limit": np.array(150, np.float32), "zero": np.array(0, np.float32),
        "ramp": np.arange(k, dtype=np.float32)[None], "fc7_zeros": np.zeros((1, 4096), np.float32),
    }  # fmt: skip
    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x", "axes"], ["mean4"], keepdims=1),
        helper.make_node("Reshape", ["mean4", "flat"], ["mean"]),
        helper.make_node("Sub", ["limit", "mean"], ["shifted"]),
        helper.make_node("Sqrt", ["shifted"], ["root"]),  # NaN above 150
        helper.make_node("Mul", ["root", "zero"], ["nan_or_zero"]),
        helper.make_node("Add", ["nan_or_zero", "ramp"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("Add", ["root", "fc7_zeros"], ["fc7"]),
    ]
    graph = helper.make_graph(
        nodes, "overflowing",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 256, 256, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", k]),
         helper.make_tensor_value_info("fc7", TensorProto.FLOAT, ["N", 4096])],
        [numpy_helper.from_array(v, name) for name, v in consts.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, str(folder / "model.onnx"))
    digest = store.sha256_file(folder / "model.onnx")
    fp32 = manifest.files["fp32"].model_copy(
        update={"sha256": digest, "bytes": (folder / "model.onnx").stat().st_size}
    )
    manifest = manifest.model_copy(update={"version": 2, "sha256": digest, "files": {"fp32": fp32}})
    for other in ("model.int8.onnx", "model.fp16.onnx"):
        (folder / other).unlink(missing_ok=True)
    write_json_atomic(folder / store.MANIFEST, manifest.model_dump())
    return root
