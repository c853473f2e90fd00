"""A checkpoint -> `model_store/<name>/<version>/model.onnx` + manifest (`alexnet export`).

    alexnet export runs/synth-bn/best.pt --name synth --data data/synth
    alexnet export runs/a/best.pt runs/b/best.pt --name synth-2cnn    # an ensemble

The graph holds the whole test-time procedure of the paper, so a client only has to
send the 256x256 image (see docs/contract.md, "Exported model"):

    images uint8 [N, 256, 256, 3] -> cast, NCHW, normalize -> ten crops [N*10, 3, c, c]
        -> AlexNet (eval: no dropout) -> softmax -> mean over the crops -> probs [N, K]
                                      -> fc7 (after ReLU) -> mean over the crops -> fc7 [N, 4096]

Several checkpoints make one graph of the same contract (the paper's "5 CNNs" rows):
`probs` is the mean over the members of each member's ten-crop softmax (each with its own
normalization and crop size), `fc7` is the first member's. The manifest lists the members;
its `arch` joins theirs ("bn+paper"), and its crop_size, normalization and pictures are the
first member's.

The paper's LRN is exported as `training.onnx_lrn.ChannelWindowLRN` (the same formula
as a banded 1x1 convolution and elementwise ops, which onnxruntime runs much faster than
`F.local_response_norm`'s pooling and Pow, above all in the int8 graph).

Before anything is written, onnxruntime runs the file on several inputs and its outputs
must equal an eager PyTorch reference built on torchvision's `five_crop` + `hflip`
(member by member, averaged) within `PROBS_ATOL` and `FC7_RTOL`/`FC7_ATOL`; a model that
disagrees is not written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from core import constants as C
from core import store
from training.ensemble import (
    Ensemble,
    check_labels,
    checkpoint_paths,
    load_members,
    ten_crop_probs,
)
from training.evaluate import error_table, evaluate_checkpoint
from training.onnx_lrn import for_onnx
from training.presets import Normalize

log = logging.getLogger(__name__)

# onnxruntime vs eager PyTorch, both float32: |a - b| <= atol + rtol * |b|, elementwise.
PROBS_ATOL = 1e-5
FC7_RTOL, FC7_ATOL = 1e-4, 1e-4
OPSET = 18


class ExportMismatchError(RuntimeError):
    """The ONNX graph does not compute what the PyTorch model computes."""


class TenCropGraph(nn.Module):
    """The exported computation: uint8 NHWC 256x256 images -> (probs, fc7), ten-crop averaged."""

    def __init__(self, model: nn.Module, normalize: Normalize, crop_size: int) -> None:
        super().__init__()
        self.model = model.eval()
        self.normalize = normalize
        self.crop_size = crop_size

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the same computation `alexnet evaluate` makes, on NCHW
        return ten_crop_probs(
            self.model, images.permute(0, 3, 1, 2), self.normalize, self.crop_size
        )


class EnsembleGraph(nn.Module):
    """Several networks as one exported computation: probs averaged over them, fc7 the first's."""

    def __init__(self, ensemble: Ensemble) -> None:
        super().__init__()
        self.ensemble = ensemble.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ensemble(images.permute(0, 3, 1, 2))


@torch.no_grad()
def reference_ten_crop(
    model: nn.Module, image: np.ndarray, normalize: Normalize, crop_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The plain way, one image: torchvision five_crop + hflip of each patch, softmax, mean.

    Args:
        model: the network in eval mode.
        image: uint8 (256, 256, 3) RGB.
        normalize: the checkpoint's normalization.
        crop_size: the variant's crop size.
    """
    x = normalize(torch.from_numpy(image).permute(2, 0, 1)[None])[0]  # (3, 256, 256)
    five = TF.five_crop(x, [crop_size, crop_size])
    crops = torch.stack([*five, *(TF.horizontal_flip(p) for p in five)])  # (10, 3, c, c)
    logits, fc7 = model.eval()(crops, return_fc7=True)
    return F.softmax(logits, 1).mean(0).numpy(), fc7.mean(0).numpy()


def reference_ensemble(ensemble: Ensemble, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`reference_ten_crop` member by member: probs averaged, fc7 the first member's."""
    refs = [reference_ten_crop(m, image, norm, crop) for m, norm, crop in ensemble.members()]
    return np.mean([probs for probs, _ in refs], axis=0), refs[0][1]


def verification_inputs(count: int = 6, seed: int = 0) -> np.ndarray:
    """uint8 (count, 256, 256, 3): noise, flat black/white and gradients, reproducibly."""
    size, rng = C.IMAGE_SIZE, np.random.default_rng(seed)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
              for _ in range(max(1, count - 3))]  # fmt: skip
    ramp = np.linspace(0, 255, size, dtype=np.float64)
    images.append(np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1),
                            255 - ramp[None, :].repeat(size, 0)], -1).astype(np.uint8))  # fmt: skip
    images += [np.zeros((size, size, 3), np.uint8), np.full((size, size, 3), 255, np.uint8)]
    return np.stack(images[:count])


def to_onnx(graph: nn.Module, path: Path) -> None:
    """Export with a dynamic batch dimension (torch.export based exporter)."""
    example = torch.zeros(2, C.IMAGE_SIZE, C.IMAGE_SIZE, 3, dtype=torch.uint8)
    torch.onnx.export(
        graph.eval(),
        (example,),
        str(path),
        input_names=[C.INPUT_NAME],
        output_names=list(C.OUTPUT_NAMES),
        dynamic_shapes={"images": {0: torch.export.Dim("N", min=1, max=4096)}},
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def verify_onnx(
    path: Path, reference: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], images: np.ndarray
) -> dict:
    """Run the ONNX file with onnxruntime (CPU) and compare it with `reference`.

    The images go through once as one batch and once one by one, so the dynamic batch
    dimension is checked too.

    Args:
        path: the ONNX file.
        reference: one uint8 (256, 256, 3) image -> the expected (probs, fc7).
        images: uint8 (N, 256, 256, 3).

    Raises:
        ExportMismatchError: an output differs beyond the tolerances.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch_probs, batch_fc7 = session.run(None, {C.INPUT_NAME: images})
    worst = {"probs": 0.0, "fc7": 0.0}
    for i, image in enumerate(images):
        ref_probs, ref_fc7 = reference(image)
        one_probs, one_fc7 = session.run(None, {C.INPUT_NAME: image[None]})
        for probs, fc7 in ((batch_probs[i], batch_fc7[i]), (one_probs[0], one_fc7[0])):
            worst["probs"] = max(worst["probs"], float(np.abs(probs - ref_probs).max()))
            worst["fc7"] = max(worst["fc7"], float(np.abs(fc7 - ref_fc7).max()))
            bad_probs = np.abs(probs - ref_probs) > PROBS_ATOL
            bad_fc7 = np.abs(fc7 - ref_fc7) > FC7_ATOL + FC7_RTOL * np.abs(ref_fc7)
            if bad_probs.any() or bad_fc7.any():
                raise ExportMismatchError(
                    f"ONNX output differs from PyTorch on verification image {i}: max |dprobs| "
                    f"{np.abs(probs - ref_probs).max():.3g} (tolerance {PROBS_ATOL}), max |dfc7| "
                    f"{np.abs(fc7 - ref_fc7).max():.3g} (tolerance {FC7_ATOL} + {FC7_RTOL}*|fc7|)"
                )
    return {
        "images": len(images),
        "max_abs_diff": worst,
        "tolerance": {"probs_atol": PROBS_ATOL, "fc7_atol": FC7_ATOL, "fc7_rtol": FC7_RTOL},
        "reference": "torchvision five_crop + hflip, eager PyTorch float32",
    }


def export_checkpoint(
    ckpt: dict | Sequence[dict],
    *,
    store_dir: Path,
    name: str,
    version: int | None = None,
    source: dict | None = None,
    metrics: dict | None = None,
    metrics_file: Path | None = None,
    members: list[dict] | None = None,
) -> Path:
    """Export, verify and publish a checkpoint as a new store version; returns its folder.

    Several checkpoints (same labels, same order) make one ensemble graph: probs averaged
    over the members, fc7 the first member's. The version also gets `filters.png` (conv1's
    kernels, of the first member) and, given the run's `metrics_file`, `curves.png`, listed
    in the manifest's `pictures`.

    Args:
        ckpt: a loaded checkpoint, or several for an ensemble.
        store_dir, name, version: where the new version goes (version None: the next one).
        source, metrics: the manifest's `source` and `metrics`.
        metrics_file: a run's metrics.jsonl, drawn as curves.png.
        members: the manifest's `members` (an ensemble's checkpoints), also named in errors.

    Raises:
        ValueError: members whose labels differ, or an invalid name.
        ExportMismatchError: onnxruntime disagrees with eager PyTorch; nothing is written.
    """
    ckpts = [ckpt] if isinstance(ckpt, dict) else list(ckpt)
    check_labels(ckpts, [m["checkpoint"] for m in members or []]
                 or [f"checkpoint {i + 1}" for i in range(len(ckpts))])  # fmt: skip
    first = ckpts[0]
    ensemble = Ensemble.from_checkpoints(ckpts)
    # the LRN in ops onnxruntime runs fast; `ensemble` stays the reference it is checked against
    exported = for_onnx(ensemble)
    # one checkpoint: the same graph as before ensembles existed
    graph = TenCropGraph(*exported.members()[0]) if len(ckpts) == 1 else EnsembleGraph(exported)
    arch = "+".join(c["arch"] for c in ckpts)
    inputs, outputs = store.contract_io(first["num_classes"])

    def fill(folder: Path, v: int) -> store.Manifest:
        onnx_path = folder / C.MODEL_FILES["fp32"]
        log.info("exporting %s:%d (%s, %d classes) to ONNX", name, v, arch, first["num_classes"])
        to_onnx(graph, onnx_path)
        log.info("verifying the ONNX model against eager PyTorch")
        verification = verify_onnx(
            onnx_path, partial(reference_ensemble, ensemble), verification_inputs()
        )
        digest = store.sha256_file(onnx_path)
        pictures = write_pictures(folder, first, metrics_file)
        return store.Manifest(
            name=name, version=v, arch=arch, num_classes=first["num_classes"],
            labels=list(first["labels"]), crop_size=first["crop_size"], inputs=inputs,
            outputs=outputs, sha256=digest,
            files={"fp32": store.ModelFile(
                file=onnx_path.name, sha256=digest, bytes=onnx_path.stat().st_size)},
            source=source or {}, created_at=store.now_iso(), metrics=metrics or {},
            normalization=_describe(first["normalization"]), verification=verification,
            pictures=pictures, members=members or [],
        )  # fmt: skip

    folder = store.publish_version(store_dir, name, version, fill)
    log.info("wrote %s", folder)
    return folder


def write_pictures(
    folder: Path, ckpt: dict, metrics_file: Path | None
) -> dict[str, store.ModelFile]:
    """filters.png (and curves.png from `metrics_file`) in `folder`, for the manifest."""
    from training import pictures

    conv1 = pictures.conv1_from_state_dict(ckpt["model"])
    paths = {"filters": pictures.save_filters(conv1, folder / C.PICTURE_FILES["filters"])}
    if metrics_file is not None:
        rows = pictures.read_metrics(metrics_file)
        paths["curves"] = pictures.save_curves(rows, folder / C.PICTURE_FILES["curves"])
    return {
        key: store.ModelFile(file=p.name, sha256=store.sha256_file(p), bytes=p.stat().st_size)
        for key, p in paths.items()
    }


def _describe(normalization: dict) -> dict:
    mean = torch.as_tensor(normalization["mean"])
    std = normalization.get("std")
    return {
        "mean": f"mean image (3x{C.IMAGE_SIZE}x{C.IMAGE_SIZE})"
        if mean.dim() == 3
        else [float(v) for v in mean.flatten()],
        "std": None if std is None else [float(v) for v in torch.as_tensor(std).flatten()],
        "units": "0..255 pixel values",
    }


def checkpoint_metrics(ckpt: dict) -> dict:
    """The figures a checkpoint already knows: its last epoch's single-crop val errors."""
    rows = ckpt.get("metrics") or []
    if not rows:
        return {}
    last = rows[-1]
    return {
        "single_crop": {"top1_err": last["val_top1_err"], "top5_err": last["val_top5_err"]},
        "source": f"training validation, epoch {last['epoch']}",
    }


def checkpoint_source(path: Path, ckpt: dict) -> dict:
    """The manifest's `source` of one checkpoint file: path, sha256 and epoch."""
    return {"checkpoint": str(path.resolve()), "sha256": store.sha256_file(path),
            "epoch": ckpt.get("epoch")}  # fmt: skip


def export_run(
    checkpoints: Path | Sequence[Path],
    *,
    store_dir: Path,
    name: str,
    version: int | None = None,
    data: Path | None = None,
    workers: int = 2,
    progress: bool = True,
    source_extra: dict | None = None,
) -> Path:
    """`export_checkpoint` of checkpoint files written by `alexnet train`.

    Several checkpoints are exported as one ensemble: the manifest's `members` lists them
    (path, sha256, epoch, arch, crop_size) and its `source` is {"ensemble": n,
    "checkpoints": [...]}; one checkpoint gives the same model and manifest as always.

    Args:
        checkpoints: a checkpoint file, or several (same labels, same order) for an ensemble;
            the first one's run metrics.jsonl beside it gives curves.png.
        store_dir, name, version: where the new version goes (version None: the next one).
        data: a dataset root: DATA/val is evaluated with one and ten crops for the manifest's
            figures (None: the checkpoint's last validation figures; none for an ensemble).
        workers: loader processes for `data`.
        progress: show progress bars.
        source_extra: more entries for the manifest's `source` (e.g. the built-in default's
            marker, `core.model_info.SYNTHETIC_DEFAULT`).

    Returns:
        the new version's folder.
    """
    paths = checkpoint_paths(checkpoints)
    ckpts = load_members(paths)
    metrics = checkpoint_metrics(ckpts[0]) if len(ckpts) == 1 else {}
    if data is not None:
        results = evaluate_checkpoint(paths, data, split="val", batch_size=32,
                                      workers=workers, progress=progress)  # fmt: skip
        log.info("figures on %s:\n%s", Path(data) / "val", error_table(results))
        metrics = {**results, "source": f"alexnet evaluate on {Path(data) / 'val'}"}
    sources = [checkpoint_source(p, c) for p, c in zip(paths, ckpts, strict=True)]
    members = [] if len(ckpts) == 1 else [
        {**s, "arch": c["arch"], "crop_size": c["crop_size"]}
        for s, c in zip(sources, ckpts, strict=True)
    ]  # fmt: skip
    source = sources[0] if len(ckpts) == 1 else {
        "ensemble": len(ckpts), "checkpoints": [s["checkpoint"] for s in sources]}  # fmt: skip
    source = {**source, **(source_extra or {})}
    run_metrics = paths[0].parent / C.METRICS_FILE  # the run's, for curves.png
    return export_checkpoint(
        ckpts, store_dir=store_dir, name=name, version=version, source=source, metrics=metrics,
        metrics_file=run_metrics if run_metrics.is_file() else None, members=members,
    )  # fmt: skip
