"""`alexnet quickstart` with torchvision's weights in the torch hub cache: the default is
the ImageNet AlexNet (1000 labels), with int8, and everything says what it knows.

Offline: the test writes a state_dict of torchvision's AlexNet (random weights: this is
about the path, not the accuracy) into a torch hub cache of its own, under the file name
torchvision's IMAGENET1K_V1 weights have.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import torch
import torchvision
from torchvision.models import AlexNet_Weights

from core import store
from tests.alexnet.test_quickstart import page_header, quickstart_argv
from tests.service.conftest import REPO, running_server

WEIGHTS = AlexNet_Weights.IMAGENET1K_V1
# 2 classes x 52 generated images: 52 calibrate int8, 52 check it (the fewest on which an
# int8 file that never disagrees passes the default rule of `alexnet quickstart`)
SMALL = ["--classes", "2", "--per-class", "52", "--calibration-images", "104"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME whose hub cache holds an AlexNet state_dict under torchvision's name."""
    home = tmp_path_factory.mktemp("torch-home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(),
               checkpoints / Path(WEIGHTS.url).name)  # fmt: skip
    return home


def run_quickstart(root: Path, hub: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALEXNET_THREADS": "2", "TORCH_HOME": str(hub), "ALEXNET_OFFLINE": "1"}
    argv = [*quickstart_argv(root, *SMALL, *extra)]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def built(hub: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("quickstart-imagenet")
    start = time.perf_counter()
    done = run_quickstart(root, hub, "--build-only")
    print(f"ImageNet default build: {time.perf_counter() - start:.0f} s")  # shown with -s
    assert done.returncode == 0, done.stderr[-3000:]
    return root, done.stderr


def test_the_default_is_the_imported_imagenet_model_with_int8(built, hub: Path) -> None:
    root, log = built
    assert store.list_names(root / "store") == ["default"]
    folder = root / "store" / "default" / "1"
    m = store.read_manifest(folder)
    assert m.labels == WEIGHTS.meta["categories"] and m.arch == "torchvision"
    # imported from the hub cache's file, offline, and nothing was trained
    cached = hub / "hub" / "checkpoints" / Path(WEIGHTS.url).name
    assert m.source["weights_file"] == str(cached.resolve())
    assert not (root / "run").exists()
    int8 = m.files["int8"]
    assert store.sha256_file(folder / int8.file) == int8.sha256
    assert int8.details["held_out_images"] == 52 and int8.details["calibration_images"] == 52
    assert "knows 1000 ImageNet classes" in log
    assert "import-torchvision" not in log  # no hint: it has real labels


def test_it_serves_int8_and_says_it_knows_imagenet(built, hub: Path) -> None:
    root, _ = built
    with running_server(root / "store", root / "gallery", command=quickstart_argv(root, *SMALL),
                        cwd=REPO, TORCH_HOME=str(hub)) as url:  # fmt: skip
        loaded = httpx.get(f"{url}/models").json()["loaded"]
        assert loaded["knows"] == "1000 ImageNet classes" and loaded["hint"] is None
        assert loaded["precision"] == "int8" and loaded["num_classes"] == 1000
        header = page_header(url)
    assert "This model knows 1000 ImageNet classes." in header
    assert "import-torchvision" not in header
