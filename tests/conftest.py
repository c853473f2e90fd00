"""Shared fixtures: a generated image set and a small run trained in this session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores: keep torch from oversubscribing them when tests start subprocesses.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# Tests never download (the subprocesses they start inherit this): `alexnet quickstart`
# builds the synthetic default. A test that wants torchvision's weights writes them into
# a TORCH_HOME of its own (tests/alexnet/test_quickstart_imagenet.py).
os.environ["ALEXNET_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def empty_torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty torch hub cache for the session, so that weights a developer has cached
    do not change what the tests build."""
    home = tmp_path_factory.mktemp("torch-home")
    os.environ["TORCH_HOME"] = str(home)
    return home


TINY_CLASSES = 4


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes x 12 images (9 train, 3 val each) written by `training.synth`."""
    from training.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, classes=TINY_CLASSES, per_class=12, seed=3, val_fraction=0.25, progress=False)
    return root


def train_args(data: Path, output: Path, *extra: str):
    """The TrainConfig that `alexnet train` makes of these options, for a short CPU run."""
    from alexnet.train import config_from, get_args_parser

    return config_from(get_args_parser().parse_args(
        ["--data", str(data), "--output", str(output), "--device", "cpu", "--workers", "0",
         "--no-progress", *extra]
    ))  # fmt: skip


def optimized_ops(path: Path, tmp_path: Path) -> list[str]:
    """The op types of the graph onnxruntime runs (all optimizations), in order."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


@pytest.fixture(scope="session")
def trained_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `bn` run of two epochs on `synth_root`; the run folder."""
    from training.train import train

    out = tmp_path_factory.mktemp("run")
    train(train_args(synth_root, out, "--arch", "bn", "--epochs", "2", "--batch-size", "12"))
    return out


@pytest.fixture(scope="session")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`trained_run`'s checkpoint exported to a fresh store as tiny:1; the version folder."""
    from training.checkpoint import load_checkpoint
    from training.export import export_checkpoint

    store_dir = tmp_path_factory.mktemp("store")
    ckpt = load_checkpoint(trained_run / "checkpoint.pt")
    return export_checkpoint(ckpt, store_dir=store_dir, name="tiny", source={"checkpoint": "test"})


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """A real PostgreSQL 18 + pgvector on 127.0.0.1 for the session (`tests.postgres`)."""
    from tests.postgres import Postgres

    server = Postgres(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    if server.running:
        server.stop()


@pytest.fixture
def pg_url(postgres, request: pytest.FixtureRequest):
    """The URL of a new, empty database on the session's PostgreSQL, one per test, dropped
    after it (a cluster of hundreds of databases takes long to checkpoint at shutdown)."""
    import hashlib

    name = "t_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]
    if not postgres.running:  # a test stopped it
        postgres.start()
    yield postgres.create_database(name)
    if postgres.running:
        postgres.drop_database(name)


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
