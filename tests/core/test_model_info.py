"""What a model knows, in words: ImageNet's labels recognised without torch."""

from __future__ import annotations

from pathlib import Path

from torchvision.models import AlexNet_Weights

from core import model_info, store

CATEGORIES = AlexNet_Weights.IMAGENET1K_V1.meta["categories"]


def manifest(labels: list[str], source: dict | None = None) -> store.Manifest:
    inputs, outputs = store.contract_io(len(labels))
    return store.Manifest(name="m", version=1, arch="bn", num_classes=len(labels), labels=labels,
                          crop_size=227, inputs=inputs, outputs=outputs, sha256="0" * 64,
                          files={}, source=source or {}, created_at="now")  # fmt: skip


def test_torchvisions_imagenet_labels_are_1000_imagenet_classes() -> None:
    assert model_info.is_imagenet(CATEGORIES)
    assert model_info.knows(manifest(CATEGORIES)) == "1000 ImageNet classes"
    assert model_info.IMAGENET_WEIGHTS_URL == AlexNet_Weights.IMAGENET1K_V1.url
    # the same names in another order, or one changed, are not ImageNet's classes
    assert not model_info.is_imagenet(CATEGORIES[::-1])
    assert not model_info.is_imagenet(["goldfish", *CATEGORIES[1:]])
    assert model_info.knows(manifest(CATEGORIES[::-1])).startswith("1000 classes: ")


def test_other_models_are_described_by_their_classes() -> None:
    assert model_info.knows(manifest(["cat", "dog"])) == "2 classes: cat, dog"
    assert model_info.knows(manifest(["x"])) == "1 class: x"
    many = [f"c{i}" for i in range(20)]
    assert model_info.knows(manifest(many)) == (
        "20 classes: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11 and 8 more"
    )


def test_only_the_synthetic_default_gets_the_hint() -> None:
    assert model_info.real_labels_hint(manifest(["cat", "dog"])) is None
    hint = model_info.real_labels_hint(manifest(["star", "stripes"], {"builtin": "synthetic"}))
    weights = Path(AlexNet_Weights.IMAGENET1K_V1.url).name
    assert f"alexnet import-torchvision --name imagenet --weights-file {weights}" in hint
    assert "drawn shapes" in hint
