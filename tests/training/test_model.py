"""The network: layer shapes and parameter counts against the paper, LRN, initialization."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from training.model import LocalResponseNorm, build_model, weight_layers

# The paper's layers for 1000 classes (conv2/4/5 grouped in two, as on the paper's two GPUs).
PAPER_PARAMS = {
    "conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936, "conv5": 442_624,
    "fc6": 37_752_832, "fc7": 16_781_312, "fc8": 4_097_000,
}  # fmt: skip
UNGROUPED_PARAMS = {**PAPER_PARAMS, "conv2": 614_656, "conv4": 1_327_488, "conv5": 884_992}


@pytest.mark.parametrize(
    ("arch", "per_layer", "total"),
    [("paper", PAPER_PARAMS, 60_965_224), ("paper-ungrouped", UNGROUPED_PARAMS, 62_378_344)],
)
def test_parameter_counts_match_the_paper(arch: str, per_layer: dict, total: int) -> None:
    model = build_model(arch, 1000)
    counts = {
        name: sum(p.numel() for p in layer.parameters())
        for name, layer in weight_layers(model).items()
    }
    assert counts == per_layer
    assert sum(p.numel() for p in model.parameters()) == total


def test_torchvision_variant_has_torchvisions_parameter_count() -> None:
    assert sum(p.numel() for p in build_model("torchvision", 1000).parameters()) == 61_100_840


def _shapes_after_each_stage(model: nn.Module, crop: int) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.Linear, LocalResponseNorm))
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, crop, crop))
    for h in hooks:
        h.remove()
    return shapes


def test_paper_layer_shapes() -> None:
    model = build_model("paper", 1000)
    assert model.crop_size == 227
    assert _shapes_after_each_stage(model, 227) == [
        (96, 55, 55), (96, 55, 55), (96, 27, 27),  # conv1, LRN, pool
        (256, 27, 27), (256, 27, 27), (256, 13, 13),  # conv2, LRN, pool
        (384, 13, 13), (384, 13, 13), (256, 13, 13), (256, 6, 6),  # conv3, conv4, conv5, pool
        (4096,), (4096,), (1000,),  # fc6, fc7, fc8
    ]  # fmt: skip


def test_torchvision_layer_shapes() -> None:
    model = build_model("torchvision", 10)
    assert model.crop_size == 224
    assert _shapes_after_each_stage(model, 224) == [
        (64, 55, 55), (64, 27, 27), (192, 27, 27), (192, 13, 13), (384, 13, 13), (256, 13, 13),
        (256, 13, 13), (256, 6, 6), (4096,), (4096,), (10,),
    ]  # fmt: skip


def test_grouped_layers_connect_only_within_each_half() -> None:
    """conv2's first 128 kernels must not see the second half of conv1's 96 maps."""
    model = build_model("paper", 10).eval()
    conv2 = weight_layers(model)["conv2"]
    x = torch.randn(1, 96, 27, 27, requires_grad=True)
    conv2(x)[0, :128].sum().backward()
    assert x.grad[0, :48].abs().sum() > 0
    assert torch.all(x.grad[0, 48:] == 0)


def _lrn_by_the_formula(
    a: torch.Tensor, n: int, alpha: float, beta: float, k: float
) -> torch.Tensor:
    """b[i] = a[i] / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a[j]^2)^beta, per map."""
    channels = a.shape[1]
    out = torch.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        out[:, i] = a[:, i] / (k + alpha * (a[:, lo : hi + 1] ** 2).sum(1)) ** beta
    return out


def test_lrn_matches_the_papers_formula() -> None:
    torch.manual_seed(0)
    a = torch.randn(2, 12, 5, 5, dtype=torch.float64) * 30  # large activations, so LRN matters
    expected = _lrn_by_the_formula(a, n=5, alpha=1e-4, beta=0.75, k=2.0)
    got = LocalResponseNorm()(a)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    # torch's own layer with the paper's alpha would normalize five times too weakly:
    assert not torch.allclose(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a), expected)


def test_paper_initialization() -> None:
    torch.manual_seed(0)
    layers = weight_layers(build_model("paper", 1000))
    for name, layer in layers.items():
        w = layer.weight.detach()
        assert abs(w.mean().item()) < 1e-3, name
        assert w.std().item() == pytest.approx(0.01, rel=0.05), name
        expected_bias = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.all(layer.bias == expected_bias), name


def test_caffe_initialization_is_the_documented_alternative() -> None:
    layers = weight_layers(build_model("paper", 1000, init="caffe"))
    assert layers["fc6"].weight.std().item() == pytest.approx(0.005, rel=0.05)
    assert layers["conv1"].weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(layers["conv2"].bias == 0.1) and torch.all(layers["conv3"].bias == 0)


def test_he_initialization_scales_convolutions_by_fan_in() -> None:
    layers = weight_layers(build_model("bn", 10))  # he is bn's default
    assert layers["conv1"].weight.std().item() == pytest.approx(
        (2 / (3 * 11 * 11)) ** 0.5, rel=0.05
    )
    assert layers["conv3"].weight.std().item() == pytest.approx(
        (2 / (256 * 3 * 3)) ** 0.5, rel=0.05
    )
    assert layers["fc6"].weight.std().item() == pytest.approx(0.005, rel=0.05)


@pytest.mark.parametrize("arch", ["paper", "paper-ungrouped", "torchvision", "bn"])
def test_fc7_is_the_hidden_layer_that_fc8_reads(arch: str) -> None:
    model = build_model(arch, 7).eval()
    x = torch.randn(3, 3, model.crop_size, model.crop_size) * 50
    with torch.no_grad():
        logits, fc7 = model(x, return_fc7=True)
        fc8 = weight_layers(model)["fc8"]
        assert fc7.shape == (3, 4096) and logits.shape == (3, 7)
        assert torch.all(fc7 >= 0)  # after ReLU
        torch.testing.assert_close(fc8(fc7), logits)
        torch.testing.assert_close(model(x), logits)


def test_torchvision_state_dict_loads_unchanged_and_computes_the_same() -> None:
    torch.manual_seed(0)
    reference = torchvision.models.alexnet(weights=None, num_classes=1000).eval()
    ours = build_model("torchvision", 1000).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


def test_unknown_names_fail_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="paper, paper-ungrouped, torchvision, bn"):
        build_model("vgg", 10)
    with pytest.raises(ValueError, match="paper, caffe, he"):
        build_model("paper", 10, init="xavier")
