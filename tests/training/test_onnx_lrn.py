"""The paper's LRN as exported (`training.onnx_lrn`), and the paper network's int8 graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.conftest import optimized_ops, train_args
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.export import FC7_ATOL, FC7_RTOL, PROBS_ATOL, export_checkpoint, reference_ten_crop
from training.model import LocalResponseNorm, build_model
from training.onnx_lrn import ChannelWindowLRN, for_onnx
from training.presets import normalize_from
from training.quantize import agreement, collect_images, quantize_int8


def paper_formula(a: np.ndarray, n: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """Section 3.3 of the paper, literally, in float64, over axis 1 of (N, C, H, W)."""
    out = np.empty_like(a)
    channels = a.shape[1]
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        total = (a[:, lo : hi + 1] ** 2).sum(1)
        out[:, i] = a[:, i] / (k + alpha * total) ** beta
    return out


@pytest.mark.parametrize("channels", [96, 7, 3])
@pytest.mark.parametrize("scale", [1.0, 60.0])  # at 60 the window sum moves the denominator
def test_the_exported_form_computes_the_papers_formula(channels: int, scale: float) -> None:
    a = torch.randn(2, channels, 5, 6, generator=torch.Generator().manual_seed(channels)) * scale
    lrn = LocalResponseNorm()
    expected = paper_formula(a.double().numpy(), lrn.size, lrn.alpha, lrn.beta, lrn.k)
    np.testing.assert_allclose(lrn(a).numpy(), expected, rtol=2e-6, atol=1e-6)
    exported = ChannelWindowLRN(lrn, channels)(a)
    np.testing.assert_allclose(exported.numpy(), expected, rtol=2e-6, atol=1e-6)


def test_other_betas_keep_their_exponent() -> None:
    a = torch.randn(1, 10, 4, 4, generator=torch.Generator().manual_seed(0)) * 40
    lrn = LocalResponseNorm(size=3, alpha=1e-3, beta=0.5, k=1.0)
    expected = paper_formula(a.double().numpy(), 3, 1e-3, 0.5, 1.0)
    np.testing.assert_allclose(ChannelWindowLRN(lrn, 10)(a).numpy(), expected, rtol=2e-6, atol=1e-6)


def test_for_onnx_replaces_the_lrns_of_a_copy_only() -> None:
    model = build_model("paper", 5).eval()
    copied = for_onnx(model)
    assert sum(isinstance(m, LocalResponseNorm) for m in model.modules()) == 2
    assert not any(isinstance(m, LocalResponseNorm) for m in copied.modules())
    assert [m.weight.shape[0] for m in copied.modules() if isinstance(m, ChannelWindowLRN)] == [
        96, 256]  # fmt: skip
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(1)) * 50
    with torch.no_grad():
        torch.testing.assert_close(copied(x), model(x), rtol=1e-5, atol=1e-6)
    bn = build_model("bn", 5)
    assert for_onnx(bn) is bn  # nothing to replace, nothing copied
    members = for_onnx(torch.nn.ModuleList([bn, model]))  # an ensemble's members
    assert sum(isinstance(m, ChannelWindowLRN) for m in members.modules()) == 2


@pytest.fixture(scope="module")
def paper_version(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A `paper` run of two epochs on `synth_root`, exported (fp32) and quantized (int8);
    (the run's checkpoint, the version folder)."""
    from training.train import train

    out = tmp_path_factory.mktemp("paper-run")
    train(train_args(synth_root, out, "--arch", "paper", "--init", "caffe", "--recipe",
                     "quickstart", "--epochs", "2", "--batch-size", "12"))  # fmt: skip
    ckpt = load_checkpoint(out / "checkpoint.pt")
    # export_checkpoint itself refuses a graph that differs from eager PyTorch
    folder = export_checkpoint(ckpt, store_dir=tmp_path_factory.mktemp("paper-store"),
                               name="paper", source={"checkpoint": "test"})  # fmt: skip
    quantize_int8(folder / "model.onnx", folder / "model.int8.onnx",
                  collect_images(synth_root / "train", 36))  # fmt: skip
    return out / "checkpoint.pt", folder


def val_images(synth_root: Path) -> np.ndarray:
    return collect_images(synth_root / "val", 100)  # the 12 held-out images, never calibrated on


def test_the_exported_paper_graph_matches_eager_pytorch(
    paper_version: tuple[Path, Path], synth_root: Path
) -> None:
    checkpoint, folder = paper_version
    ckpt = load_checkpoint(checkpoint)
    model, normalize = model_from_checkpoint(ckpt), normalize_from(ckpt["normalization"])
    graph = onnx.load(str(folder / "model.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert "Pow" not in ops and "AveragePool" not in ops  # F.local_response_norm's form is gone
    assert "Sqrt" in ops
    images = val_images(synth_root)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    probs, fc7 = session.run(None, {"images": images})
    for i, image in enumerate(images):
        ref_probs, ref_fc7 = reference_ten_crop(model, image, normalize, ckpt["crop_size"])
        np.testing.assert_allclose(probs[i], ref_probs, atol=PROBS_ATOL, rtol=0)
        np.testing.assert_allclose(fc7[i], ref_fc7, atol=FC7_ATOL, rtol=FC7_RTOL)


def test_the_paper_int8_graph_keeps_the_lrn_in_the_int8_chain(
    paper_version: tuple[Path, Path], tmp_path: Path
) -> None:
    """No float Pow, and every max pool, pool1 and pool2 after the LRNs included, runs
    onnxruntime's NHWC uint8 kernel, not the NCHW one behind layout transposes."""
    _, folder = paper_version
    ops = optimized_ops(folder / "model.int8.onnx", tmp_path)
    assert "Pow" not in ops and "AveragePool" not in ops
    assert ops.count("QLinearConv") == 7  # conv1..conv5 and the two LRN window sums
    assert ops.count("NhwcMaxPool") == 3
    # each ReLU folded into its convolution; the LRN's square and its product with the
    # float factor in uint8: no float Mul or Div over the activations
    assert "Relu" not in ops and ops.count("QLinearMul") == 4
    assert "Mul" not in ops
    first, last = ops.index("QLinearConv"), len(ops) - ops[::-1].index("QLinearConv")
    assert "Transpose" not in ops[first:last]  # NHWC from conv1 to conv5, LRNs included


def test_the_paper_int8_graph_follows_fp32(
    paper_version: tuple[Path, Path], synth_root: Path
) -> None:
    _, folder = paper_version
    images = val_images(synth_root)
    runs = {}
    for name in ("model.onnx", "model.int8.onnx"):
        session = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
        runs[name] = session.run(None, {"images": images})
    (probs32, fc7_32), (probs8, fc7_8) = runs["model.onnx"], runs["model.int8.onnx"]
    cosine = (
        (fc7_32 * fc7_8).sum(1) / np.linalg.norm(fc7_32, axis=1) / np.linalg.norm(fc7_8, axis=1)
    )
    assert cosine.min() > 0.98, cosine
    details = agreement(probs32, probs8)
    assert details["max_abs_diff_probs"] < 0.05, details
    # Top-1 must agree wherever fp32's lead over its runner-up exceeds twice the largest
    # int8 deviation (no deviation that size can flip it). Two epochs leave some images
    # near ties, where either answer is as good (training in bf16 or fp32 decides which).
    top2 = np.sort(probs32, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) > 2 * np.abs(probs8 - probs32).max(axis=1)
    assert decided.sum() >= len(decided) // 2, "too few decided images for a check"
    assert (probs8.argmax(1) == probs32.argmax(1))[decided].all(), details


def test_the_fp16_copy_squares_in_float32_where_float16_would_overflow(tmp_path: Path) -> None:
    """float16 holds up to 65504: the LRN's x * x overflows once |x| > 256, and the layer's
    factor is then inf / inf (NaN), as an H200 showed. onnx's reference evaluator computes
    each node in the type the graph gives it, as CUDA does; onnxruntime's CPU provider
    would compute these float16 layers in float32 and hide the overflow."""
    from onnx.reference import ReferenceEvaluator
    from onnxconverter_common import float16

    from training.quantize import convert_fp16

    lrn = ChannelWindowLRN(LocalResponseNorm(), 96).eval()
    a = torch.randn(1, 96, 13, 13, generator=torch.Generator().manual_seed(0)).relu() * 150
    assert a.max() > 300  # a trained conv1's activations reach this
    fp32 = tmp_path / "lrn.onnx"
    torch.onnx.export(lrn, (a,), str(fp32), input_names=["a"], output_names=["b"],
                      opset_version=18, dynamo=True, external_data=False)  # fmt: skip
    with torch.no_grad():
        expected = lrn(a).numpy()

    def run(model: onnx.ModelProto) -> np.ndarray:
        return ReferenceEvaluator(model).run(None, {"a": a.numpy()})[0]

    plain = float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    assert np.isnan(run(plain)).any()  # what every float16 tensor gives
    convert_fp16(fp32, tmp_path / "lrn.fp16.onnx")
    ours = run(onnx.load(str(tmp_path / "lrn.fp16.onnx")))
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, expected, rtol=2e-3, atol=2e-2)  # float16's precision


def test_the_paper_fp16_graph_keeps_both_lrn_squares_in_float32(
    paper_version: tuple[Path, Path], synth_root: Path, tmp_path: Path
) -> None:
    from training.quantize import convert_fp16

    _, folder = paper_version
    convert_fp16(folder / "model.onnx", tmp_path / "model.fp16.onnx")
    graph = onnx.load(str(tmp_path / "model.fp16.onnx")).graph
    made_by = {out: n for n in graph.node for out in n.output}
    read_by = {name: [n for n in graph.node if name in n.input] for name in made_by}
    to = lambda n: next(a.i for a in n.attribute if a.name == "to")  # noqa: E731
    # x * x, each factor cast to float32 from the same float16 activations
    squares = [n for n in graph.node if n.op_type == "Mul"
               and all(made_by[i].op_type == "Cast" for i in n.input)
               and len({made_by[i].input[0] for i in n.input}) == 1]  # fmt: skip
    assert len(squares) == 2  # LRN1 and LRN2
    for square in squares:
        assert all(to(made_by[i]) == onnx.TensorProto.FLOAT for i in square.input)
        (window,) = read_by[square.output[0]]
        assert window.op_type == "Conv"
        (back,) = read_by[window.output[0]]
        assert back.op_type == "Cast" and to(back) == onnx.TensorProto.FLOAT16
    # the rest is float16: conv1..conv5 and the classifier read float16 weights
    weights = {i.name: i.data_type for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    half = [n for n in convs if weights.get(n.input[1]) == onnx.TensorProto.FLOAT16]
    assert len(half) >= 5 + 2  # conv1..conv5, fc6, fc7 (fc8 too)
    images = val_images(synth_root)
    runs = [ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
                None, {"images": images})[0]
            for path in (folder / "model.onnx", tmp_path / "model.fp16.onnx")]  # fmt: skip
    assert agreement(*runs)["top1_agreement"] == 1.0
