"""`alexnet import-torchvision`, offline, with a state_dict this test writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision
from torch.nn import functional as F
from torchvision.models import AlexNet_Weights
from torchvision.transforms.v2 import functional as TF

from alexnet.main import main as cli
from core import store


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("tv")
    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None).eval()
    torch.save(net.state_dict(), tmp / "alexnet-random.pth")
    rc = cli(["import-torchvision", "--weights-file", str(tmp / "alexnet-random.pth"),
              "--name", "imagenet",
              "--store", str(tmp / "store")])  # fmt: skip
    assert rc == 0
    return net, tmp / "store" / "imagenet" / "1"


def test_manifest_has_the_imagenet_labels_and_crop(imported) -> None:
    _, folder = imported
    m = store.read_manifest(folder)
    assert m.labels == AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    assert len(m.labels) == 1000 and m.labels[0] == "tench"
    assert (m.arch, m.crop_size, m.num_classes) == ("torchvision", 224, 1000)
    assert m.normalization["std"] == pytest.approx([0.229 * 255, 0.224 * 255, 0.225 * 255])
    # a file that is not torchvision's published one gets no borrowed accuracy figures
    assert m.source["published"] is False and m.metrics == {}


def test_graph_computes_what_torchvision_itself_computes(imported) -> None:
    """torchvision's own model and transforms, ten crops by five_crop + hflip, softmax mean."""
    net, folder = imported
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    probs, fc7 = session.run(None, {"images": images})
    for i, image in enumerate(images):
        x = TF.normalize(torch.from_numpy(image).permute(2, 0, 1).float() / 255,
                         [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # fmt: skip
        five = TF.five_crop(x, [224, 224])
        crops = torch.stack([*five, *(TF.horizontal_flip(p) for p in five)])
        with torch.no_grad():
            ref = F.softmax(net(crops), 1).mean(0).numpy()
            hidden = (
                net.classifier[:6](torch.flatten(net.avgpool(net.features(crops)), 1))
                .mean(0)
                .numpy()
            )
        np.testing.assert_allclose(probs[i], ref, atol=1e-5, rtol=0)
        np.testing.assert_allclose(fc7[i], hidden, atol=1e-4, rtol=1e-4)


def test_a_file_that_is_not_an_alexnet_state_dict_is_refused(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    rc = cli(["import-torchvision", "--weights-file", str(tmp_path / "other.pth"), "--name", "x",
              "--store", str(tmp_path / "store")])  # fmt: skip
    assert rc == 1
    assert store.list_names(tmp_path / "store") == []


def test_published_figures_are_torchvisions() -> None:
    from training.import_torchvision import published_metrics, published_sha256_prefix

    m = published_metrics()["single_crop"]
    assert m["top1_err"] == pytest.approx(1 - 0.56522) and m["top5_err"] == pytest.approx(
        1 - 0.79066
    )
    assert published_sha256_prefix() == "7be5be79"
