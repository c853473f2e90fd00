"""int8 (CPU) and fp16 (CUDA) files for a store version (`alexnet quantize`).

Both are written beside `model.onnx` in the same version folder and listed, with their
sha256, in its manifest; the same input (uint8 images) and outputs (float32 probs, fc7).

- int8: onnxruntime static quantization, QDQ format, per-channel int8 weights and uint8
  activations (the fast U8S8 kernels on x86), calibrated with min/max ranges on images
  from DIR. fc8, the last layer (of each member of an ensemble), stays in float: it is
  small, and it decides the ranking.
  Before it is added, its top-1 agreement and top-5 overlap with fp32 are measured on
  held-out images of DIR (not used for calibration) and recorded in the manifest.
- The rule that refuses an int8 file: the agreement measured on n held-out images is an
  estimate of the agreement on all images, and a small n cannot tell a good file from a
  poor one (a file that agrees with fp32 on 99% of images disagrees at least once in 80
  images more often than not, 55% of the time). So the bar applies to a lower confidence
  bound: the one-sided Wilson score bound at `confidence` (default 95%) of the top-1
  agreement must reach `min_agreement` (default 95%). With the default 200 held-out images
  that accepts up to 4 disagreements (98%): a file that truly agrees on 99.5% of images
  passes 996 times in 1000 (99%: 948), one at 93% fails 999 times in 1000. Too few
  held-out images refuse even a file that never disagrees (under 52 at the defaults): the
  message says so.
- fp16: every float tensor in half precision (onnxconverter-common, keep_io_types), for
  CUDA, except the input cast and each square with the nodes that read it
  (`float32_squares`: the paper LRN's x * x overflows float16). Its agreement with fp32 is
  measured the same way, on CUDA where there is a GPU: onnxruntime's CPU provider computes
  float16 layers in float32, so only a GPU shows what float16 arithmetic does.
"""

from __future__ import annotations

import logging
import math
import tempfile
import warnings
from pathlib import Path
from statistics import NormalDist

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from core import constants as C
from core import store
from core.imaging import find_images, load_256
from core.model_loader import check_file, providers, session_options

log = logging.getLogger(__name__)


class AgreementTooLowError(ValueError):
    """The quantized model disagrees with fp32 more than allowed."""


def collect_images(folder: Path, limit: int, seed: int = 0) -> np.ndarray:
    """Up to `limit` images under `folder` (recursively), as uint8 (N, 256, 256, 3)."""
    paths = find_images(folder)
    rng = np.random.default_rng(seed)
    chosen = [paths[i] for i in sorted(rng.permutation(len(paths))[:limit])]
    images = []
    for p in tqdm(chosen, desc="reading images", unit="img"):
        try:
            images.append(load_256(p))
        except OSError as e:
            log.warning("skipping unreadable image %s: %s", p, e)
    if len(images) < 4:
        raise ValueError(f"need at least 4 readable images under {folder}, found {len(images)}")
    return np.stack(images)


class _Batches(CalibrationDataReader):
    def __init__(self, images: np.ndarray, batch: int = 8) -> None:
        self._it = iter([images[i : i + batch] for i in range(0, len(images), batch)])

    def get_next(self) -> dict | None:
        batch = next(self._it, None)
        return None if batch is None else {C.INPUT_NAME: batch}


def run_probs(path: Path, images: np.ndarray, threads: int | None = None,
              device: str = "cpu") -> tuple[np.ndarray, str]:  # fmt: skip
    """(N, K) probs of `images` by the file at `path`, and the provider that computed them.

    device: "cpu", or "auto" for CUDA where onnxruntime and the driver have it."""
    session = ort.InferenceSession(str(path), session_options(threads), providers=providers(device))
    probs = [session.run(["probs"], {C.INPUT_NAME: images[i : i + 8]})[0]
             for i in range(0, len(images), 8)]  # fmt: skip
    return np.concatenate(probs), session.get_providers()[0]


def agreement(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Top-1 agreement and mean top-5 overlap of two (N, K) probability arrays."""
    k = min(5, reference.shape[1])
    top_ref = np.argsort(-reference, 1)[:, :k]
    top_cand = np.argsort(-candidate, 1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_ref, top_cand, strict=True)]
    return {
        "top1_agreement": float((top_ref[:, 0] == top_cand[:, 0]).mean()),
        "top5_overlap": float(np.mean(overlap)),
        "max_abs_diff_probs": float(np.abs(reference - candidate).max()),
        "held_out_images": len(reference),
    }


def check_finite(precision: str, probs: np.ndarray, reference: np.ndarray, ran_on: str) -> None:
    """Refuse a file that gives NaN or infinite probabilities (an overflow: it would be
    refused at serving time, image by image), whatever the agreement bar."""
    bad = int((~np.isfinite(probs).all(1)).sum())
    if bad:
        also = int((~np.isfinite(reference).all(1)).sum())
        raise AgreementTooLowError(
            f"{precision} gives NaN or infinite probabilities for {bad} of {len(probs)} "
            f"held-out images on {ran_on} (fp32: {also}); not added"
        )


def wilson_lower_bound(successes: int, n: int, confidence: float) -> float:
    """The one-sided Wilson score lower bound of a proportion: with probability `confidence`
    the true proportion is at least this, given `successes` out of `n` independent trials.

    Unlike the normal approximation it stays inside [0, 1] and is sound for proportions
    near 1 (the case here: 0 failures give n / (n + z^2), not 1).
    """
    if n == 0:
        return 0.0
    z = NormalDist().inv_cdf(confidence)
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def held_out_needed(min_agreement: float, confidence: float) -> int:
    """The fewest held-out images on which a file that never disagrees can pass."""
    z2 = NormalDist().inv_cdf(confidence) ** 2
    return math.ceil(z2 * min_agreement / (1 - min_agreement)) if min_agreement < 1 else 0


def check_agreement(details: dict, min_agreement: float, confidence: float) -> None:
    """Refuse (AgreementTooLowError) unless the agreement's lower bound reaches the bar."""
    n, observed = details["held_out_images"], details["top1_agreement"]
    bound = details["top1_agreement_lower_bound"]
    if bound >= min_agreement:
        return
    few = (
        f"; {n} held-out images cannot show that even without a disagreement (it takes "
        f"{held_out_needed(min_agreement, confidence)}): give more --images"
        if observed == 1
        else "; try more or more representative --calibration images"
    )
    raise AgreementTooLowError(
        f"int8 top-1 agreement with fp32 is {observed:.1%} on {n} held-out images; its "
        f"{confidence:.0%} lower confidence bound {bound:.1%} is below --min-agreement "
        f"{min_agreement:.1%}: not written{few}"
    )


def classifier_gemms(model: onnx.ModelProto) -> list[str]:
    """The fc8 nodes: the last of each member's three fully connected layers (fc6, fc7, fc8;
    an ensemble's members follow one another in the graph)."""
    gemms = [n.name for n in model.graph.node if n.op_type == "Gemm"]
    if len(gemms) % 3:
        raise ValueError(f"expected three fully connected layers per network, found {len(gemms)}")
    return gemms[2::3]


# Relu is listed so that the quantizer folds each ReLU into the convolution or Gemm before
# it: the uint8 activation is quantized over the ReLU's range (0..max, twice the resolution
# of the convolution's own min..max), and onnxruntime runs the pair as one QLinearConv
# instead of QLinearConv -> DequantizeLinear -> float Relu -> ... In the paper's network
# that also puts the LRN's square in uint8 (QLinearMul). Measured on the bench models,
# 2 threads: `paper` int8 +11%, `bn` int8 +17-25%, agreement with fp32 up (README).
# Mul is listed for the paper's LRN (`training.onnx_lrn`): its output, x times the float
# factor t ** -0.75, then runs as a uint8 QLinearMul instead of DequantizeLinear, Div and
# QuantizeLinear over the float activations. `bn` has no Mul.
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "Relu", "Mul"]


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    keep_float = classifier_gemms(onnx.load(str(fp32)))
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(out), _Batches(calibration), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=keep_float,
        )  # fmt: skip


def float32_squares(graph: onnx.GraphProto) -> list[str]:
    """The nodes that square a tensor (Mul of it by itself) and the nodes that read a square.

    float16 holds up to 65504, so a square is inf once |x| > 255.9. The paper's LRN squares
    the activations of conv1 and conv2, and its constants (alpha 1e-4, k 2) make the
    window sum matter only when it reaches the tens of thousands, so a trained network has
    such activations. In float16 the window sum is then inf and the LRN's factor
    sqrt(sqrt(t)) / t is inf / inf: NaN in every probability (on an H200, LRN1 alone gave
    NaN for activations up to 461). In float32 the square and its window sum k + alpha * sum,
    which float16 holds up to |x| of about 11,000, cost two casts.
    """
    squares = {n.output[0] for n in graph.node
               if n.op_type == "Mul" and n.input[0] == n.input[-1]}  # fmt: skip
    return [n.name for n in graph.node if n.output[0] in squares or squares & set(n.input)]


def convert_fp16(fp32: Path, out: Path) -> None:
    """Write the fp16 copy of `fp32`; float16's range limits are reported in one log line.

    The input's uint8 -> float Cast and `float32_squares` stay float32. onnxconverter-common
    warns once per weight tensor holding a value that float16 cannot hold (below 1e-7 in
    magnitude: rounded to +-1e-7; above 65504: clipped), dozens of warnings for a trained
    AlexNet. What they say together is one fact about the copy."""
    from onnxconverter_common import float16

    model = onnx.load(str(fp32))
    names = {n.name for n in model.graph.node}
    for i, node in enumerate(model.graph.node):  # the converter keeps nodes and names casts by name
        if not node.name:
            node.name = next(f"node_{i}_{k}" for k in range(len(names) + 1)
                             if f"node_{i}_{k}" not in names)  # fmt: skip
    # by name: "Cast" as an op type would also match the casts the converter inserts around
    # the nodes it keeps, and it would insert casts around those without end
    kept = [n.name for n in model.graph.node if n.op_type == "Cast"]
    kept += float32_squares(model.graph)
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", "the float32 number", UserWarning)
        model = float16.convert_float_to_float16(
            model,
            keep_io_types=True,  # uint8 in, float32 out, as the contract says
            op_block_list=float16.DEFAULT_OP_BLOCK_LIST,
            node_block_list=kept,
        )
    for w in caught:
        if not str(w.message).startswith("the float32 number"):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    clipped = [w for w in caught if str(w.message).startswith("the float32 number")]
    if clipped:
        large = sum("65504" in str(w.message) for w in clipped)
        log.info(
            "fp16: float16 cannot hold some weights: %d tensor extreme(s) rounded (%d to "
            "+-1e-07, %d to +-65504); the agreement with fp32 is measured next",
            len(clipped),
            len(clipped) - large,
            large,
        )
    onnx.save(model, str(out))


def quantize(
    store_dir: Path,
    spec: str,
    calibration_dir: Path,
    *,
    images: int = 400,
    held_out: float = 0.5,
    min_agreement: float = 0.95,
    confidence: float = 0.95,
    precisions: tuple[str, ...] = ("int8", "fp16"),
) -> store.Manifest:
    """Add int8 and/or fp16 files to a store version, after measuring their agreement.

    Args:
        store_dir: the model store.
        spec: NAME or NAME:VERSION (the latest version when none is given).
        calibration_dir: representative images (searched recursively).
        images: how many images to read from it.
        held_out: the share of them kept for measuring agreement (not calibration).
        min_agreement: an int8 model is refused unless the lower confidence bound of its
            top-1 agreement with fp32 reaches this (0 accepts any).
        confidence: of that one-sided Wilson score bound.
        precisions: what to make; one the version already has (its file checked against
            the manifest) is skipped before any image is read.

    Returns:
        the version's manifest, with the new files.

    Raises:
        AgreementTooLowError: int8 is not shown to agree with fp32 at `min_agreement`.
        ModelLoadError: a file the version lists does not match its manifest.
    """
    folder = store.resolve(store_dir, spec)
    manifest = store.read_manifest(folder)
    fp32 = check_file(folder, manifest, "fp32")
    for precision in precisions:
        if precision in manifest.files:
            check_file(folder, manifest, precision)  # a listed file must be the one made
            log.info("%s already has %s (%s); skipped", manifest.id, precision,
                     manifest.files[precision].file)  # fmt: skip
    todo = [p for p in precisions if p not in manifest.files]
    if not todo:
        return manifest
    batch = collect_images(calibration_dir, images)
    n_held = max(2, int(round(len(batch) * held_out)))
    calibration, held = batch[:-n_held], batch[-n_held:]
    log.info("calibration: %d images, held out: %d", len(calibration), len(held))
    reference, _ = run_probs(fp32, held)
    for precision in todo:
        with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
            out = Path(tmp) / C.MODEL_FILES[precision]
            log.info("making %s", out.name)
            if precision == "int8":
                quantize_int8(fp32, out, calibration)
            else:
                convert_fp16(fp32, out)
            # fp16 runs on CUDA where there is a GPU (the CPU provider computes it in float32)
            device = "auto" if precision == "fp16" else "cpu"
            probs, measured_on = run_probs(out, held, device=device)
            check_finite(precision, probs, reference, measured_on)
            details = agreement(reference, probs)
            details["measured_on"] = measured_on
            agree = round(details["top1_agreement"] * len(held))
            details["top1_agreement_lower_bound"] = wilson_lower_bound(agree, len(held),
                                                                       confidence)  # fmt: skip
            details["confidence"] = confidence
            log.info(
                "%s vs fp32 on %d held-out images: top-1 agreement %.1f%% (%.0f%% lower bound "
                "%.1f%%), top-5 overlap %.1f%%; %s ran it%s", precision, len(held),
                100 * details["top1_agreement"], 100 * confidence,
                100 * details["top1_agreement_lower_bound"], 100 * details["top5_overlap"],
                measured_on, " (float16 layers computed in float32 there)"
                if precision == "fp16" and measured_on == "CPUExecutionProvider" else "",
            )  # fmt: skip
            if precision == "int8":
                check_agreement(details, min_agreement, confidence)
            details["calibration_images"] = len(calibration) if precision == "int8" else 0
            manifest = store.add_file(folder, precision, out, details)
    return manifest
