"""Load a model-store entry into an onnxruntime session, checked against the contract.

Shared by the service and the tools; needs onnxruntime and no torch.

    loaded = load_model("model_store", "synth:1", precision="auto", device="auto")
    probs, fc7 = loaded.session.run(None, {"images": batch_uint8_nhwc})

Precision "auto" takes fp16 when the session really runs on CUDA and the version has an
fp16 file, int8 on CPU when it has an int8 file, else fp32. CUDA is asked for only where
the NVIDIA driver sees a GPU (`core.gpu`): onnxruntime-gpu lists CUDA as available on
machines without one, and asked for it there prints an error before it runs on the CPU.
Whether CUDA is really in use is read from `session.get_providers()` after the session
exists, and said in one log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from core import constants as C
from core import store
from core.gpu import cuda_gpus
from core.thread_cpu import started_threads

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "int8")
DEVICES = ("auto", "cuda", "cpu")


class ModelLoadError(ValueError):
    """The store entry is missing, corrupt or does not follow the contract."""


@dataclass
class LoadedModel:
    manifest: store.Manifest
    folder: Path
    precision: str
    session: ort.InferenceSession
    provider: str  # the provider the session actually runs on
    # kernel ids of the threads onnxruntime started for this session (its intra-op pool),
    # so the service can count the session's CPU time (`core.thread_cpu`)
    pool_threads: tuple[int, ...] = ()

    @property
    def id(self) -> str:
        return self.manifest.id

    def gallery_binding(self) -> dict[str, str]:
        """What a gallery records of the model making its vectors: the loaded file's sha256
        (fp32, int8 and fp16 vectors differ slightly, so they are not mixed either)."""
        return {
            "model_sha256": self.manifest.files[self.precision].sha256,
            "model_id": f"{self.id}/{self.precision}",
        }


def session_options(threads: int | None, spinning: bool | None = None) -> ort.SessionOptions:
    """Full graph optimization; `threads` intra-op threads; `spinning`: whether those threads
    busy-wait for work between and within calls (None: onnxruntime's default, on)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        # In a container the default pool sizes itself to the host's cores, not the limit.
        options.intra_op_num_threads = threads
    if spinning is not None:
        # Spinning saves a wake-up per parallel section, but burns the cores that a server's
        # other threads (decoding, HTTP) need when there are only a few.
        options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    return options


def why_not_cuda(device: str) -> str:
    """Why onnxruntime will not be asked for CUDA, or "" when it will be."""
    if device == "cpu":
        return "as asked"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDA provider"
    gpus, why = cuda_gpus()
    return f"no CUDA GPU: {why}" if not gpus else ""


def providers(device: str) -> list:
    """onnxruntime's providers for `device` ("auto", "cuda", "cpu"): CUDA first where it runs."""
    cpu = "CPUExecutionProvider"
    if why_not_cuda(device):
        # asking onnxruntime-gpu for CUDA without a GPU prints an error before it falls back
        return [cpu]
    try:
        ort.preload_dlls(cuda=True, cudnn=True)  # CUDA / cuDNN from the nvidia-* pip packages
    except Exception as e:  # noqa: BLE001 - missing libraries mean "CPU", reported below
        log.debug("preload_dlls: %s", e)
    cuda_options = {
        "cudnn_conv_algo_search": "HEURISTIC",  # EXHAUSTIVE re-tunes for every new batch size
        "arena_extend_strategy": "kSameAsRequested",
    }
    return [("CUDAExecutionProvider", cuda_options), cpu]


def _create(
    path: Path, device: str, threads: int | None, spinning: bool | None
) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(
            str(path), session_options(threads, spinning), providers=providers(device)
        )
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ModelLoadError(f"onnxruntime cannot load {path}: {e}") from None


def check_file(folder: Path, manifest: store.Manifest, precision: str) -> Path:
    """The file of `precision`, after checking its sha256 against the manifest."""
    entry = manifest.files.get(precision)
    if entry is None:
        raise ModelLoadError(
            f"{manifest.id} has no {precision} model (it has: {', '.join(manifest.files)})"
        )
    path = folder / entry.file
    if not path.is_file():
        raise ModelLoadError(f"{path} is listed in the manifest but missing")
    digest = store.sha256_file(path)
    if digest != entry.sha256:
        raise ModelLoadError(
            f"{path} is corrupt or was changed: sha256 {digest[:12]}... but the manifest "
            f"records {entry.sha256[:12]}..."
        )
    return path


def check_io(session: ort.InferenceSession, manifest: store.Manifest) -> None:
    """Input and output names, types and shapes must be the contract's."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    got = {t.name: (t.type, list(t.shape)) for t in [*inputs, *outputs]}
    want = {t.name: t for t in [*manifest.inputs, *manifest.outputs]}
    problems = []
    if [t.name for t in inputs] != [C.INPUT_NAME]:
        problems.append(f"inputs {[t.name for t in inputs]}, expected ['images']")
    if sorted(t.name for t in outputs) != sorted(C.OUTPUT_NAMES):
        problems.append(f"outputs {[t.name for t in outputs]}, expected {list(C.OUTPUT_NAMES)}")
    for name, spec in want.items():
        if name not in got:
            continue
        onnx_type, shape = got[name]
        if onnx_type != f"tensor({'float' if spec.dtype == 'float32' else spec.dtype})":
            problems.append(f"{name} is {onnx_type}, expected {spec.dtype}")
        fixed = [
            (a, b) for a, b in zip(shape[1:], spec.shape[1:], strict=False) if isinstance(b, int)
        ]
        if len(shape) != len(spec.shape) or any(a != b for a, b in fixed):
            problems.append(f"{name} has shape {shape}, expected {spec.shape}")
    if (
        manifest.outputs[0].shape[1] != manifest.num_classes
        or len(manifest.labels) != manifest.num_classes
    ):
        problems.append("the manifest's labels, classes and probs shape disagree")
    if problems:
        raise ModelLoadError(f"{manifest.id} does not follow the contract: " + "; ".join(problems))


def load_model(
    store_dir: str | Path,
    spec: str,
    *,
    precision: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    spinning: bool | None = None,
) -> LoadedModel:
    """Resolve 'name[:version]', check the file, create and check the session.

    Args:
        store_dir: the model store folder.
        spec: "name" (latest version) or "name:version".
        precision: auto, fp32, fp16 or int8.
        device: auto (CUDA when it really works), cuda or cpu.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
        spinning: whether they busy-wait for work (None: onnxruntime's default, yes).

    Raises:
        FileNotFoundError: no such model or version.
        ModelLoadError: corrupt file, broken manifest, or input/outputs off the contract.
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"Unknown precision {precision!r}. Only {', '.join(PRECISIONS)} are supported."
        )
    if device not in DEVICES:
        raise ValueError(f"Unknown device {device!r}. Only {', '.join(DEVICES)} are supported.")
    folder = store.resolve(store_dir, spec)
    try:
        manifest = store.read_manifest(folder)
    except ValueError as e:
        raise ModelLoadError(str(e)) from None

    first = "fp32" if precision == "auto" else precision
    if precision == "auto" and device != "cpu" and "fp16" in manifest.files:
        first = "fp16"  # right if CUDA really runs; checked below
    session, pool = started_threads(
        lambda: _create(check_file(folder, manifest, first), device, threads, spinning)
    )
    on_cuda = session.get_providers()[0] == "CUDAExecutionProvider"
    chosen = first
    if precision == "auto":
        wanted = "fp16" if on_cuda and "fp16" in manifest.files else (
            "int8" if not on_cuda and "int8" in manifest.files else "fp32")  # fmt: skip
        if wanted != first:
            del session  # its pool threads end with it
            session, pool = started_threads(lambda: _create(
                check_file(folder, manifest, wanted), "cpu" if not on_cuda else device, threads,
                spinning,
            ))  # fmt: skip
            chosen = wanted
    check_io(session, manifest)
    provider = session.get_providers()[0]
    # the one line that says where the model runs
    if on_cuda:
        where = "the GPU"
    else:
        why = why_not_cuda(device) or "CUDA did not start; onnxruntime's message above says why"
        where = f"the CPU ({why})"
    log.log(
        logging.WARNING if device == "cuda" and not on_cuda else logging.INFO,
        "%s (%s) from %s runs on %s with onnxruntime's %s",
        manifest.id,
        chosen,
        folder,
        where,
        provider,
    )
    return LoadedModel(
        manifest=manifest,
        folder=folder,
        precision=chosen,
        session=session,
        provider=provider,
        pool_threads=pool,
    )
