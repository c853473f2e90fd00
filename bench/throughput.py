"""Images/s and latencies: the raw onnxruntime session, the service over HTTP, the naive
per-request PyTorch baseline, and JPEG decoding."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from core.model_loader import load_model
from service.decode import decode

BIG = 1 << 30  # no size limits for decode timing


def percentiles(seconds: list[float]) -> dict:
    """p50/p95/p99 and mean in milliseconds."""
    ms = np.array(seconds) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "n": len(ms),
    }


def engine(
    store: Path, model: str, precision: str, images: np.ndarray, batches: list[int],
    threads: int, min_seconds: float,
) -> list[dict]:  # fmt: skip
    """Images/s of direct `session.run` calls at each batch size (after one warm-up call)."""
    loaded = load_model(store, model, precision=precision, device="cpu", threads=threads)
    out = []
    for batch in batches:
        x = np.stack([images[i % len(images)] for i in range(batch)])
        loaded.session.run(None, {"images": x})
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < 3 or time.perf_counter() - start < min_seconds:
            t = time.perf_counter()
            loaded.session.run(None, {"images": x})
            times.append(time.perf_counter() - t)
        out.append({
            "precision": precision, "batch": batch, "calls": len(times),
            "images_per_s": batch * len(times) / sum(times),
            "call_ms_p50": 1000 * statistics.median(times),
        })  # fmt: skip
    return out


def decode_times(jpegs: list[bytes], repeats: int) -> dict:
    """Decode (draft mode) + resize to 256x256 of each JPEG, as the service does."""
    times = []
    for _ in range(repeats):
        for data in jpegs:
            t = time.perf_counter()
            decode(data, max_bytes=BIG, max_pixels=BIG)
            times.append(time.perf_counter() - t)
    return percentiles(times)


def naive(checkpoint: Path, jpegs: list[bytes], repeats: int, threads: int) -> dict:
    """What users write by hand, per request: PIL decode, torchvision Resize(256) + TenCrop,
    eager PyTorch forward, softmax averaged over the crops. Seconds per image."""
    import io

    import torch
    from PIL import Image
    from torchvision import transforms

    from training.checkpoint import load_checkpoint
    from training.model import build_model

    torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    model = build_model(ckpt["arch"], ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    mean = torch.as_tensor(ckpt["normalization"]["mean"], dtype=torch.float32)
    mean = mean.mean(dim=(1, 2)) / 255 if mean.dim() == 3 else mean
    transform = transforms.Compose([
        transforms.Resize(256),
        transforms.TenCrop(ckpt["crop_size"]),
        transforms.Lambda(lambda crops: torch.stack([transforms.ToTensor()(c) for c in crops])),
        transforms.Normalize(mean.tolist(), [1 / 255] * 3),
    ])  # fmt: skip

    def predict(data: bytes) -> torch.Tensor:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        with torch.inference_mode():
            return model(transform(img)).softmax(1).mean(0)

    predict(jpegs[0])
    times = []
    for _ in range(repeats):
        for data in jpegs:
            t = time.perf_counter()
            predict(data)
            times.append(time.perf_counter() - t)
    return {"images_per_s": len(times) / sum(times), **percentiles(times)}


def load(url: str, path: str, jpegs: list[bytes], clients: int, requests: int,
         warmup: int = 2, ok: int = 200) -> dict:  # fmt: skip
    """`clients` threads, each posting one JPEG per request to `path` until `requests`
    requests are done in all; images/s and latency percentiles of the answers `ok`."""
    lock = threading.Lock()
    state = {"left": requests, "errors": 0}
    latencies: list[float] = []

    def worker(n: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            for i in range(warmup):
                client.post(path, files={"image": ("a.jpg", jpegs[(n + i) % len(jpegs)])})
            barrier.wait()
            i = n
            while True:
                with lock:
                    if state["left"] <= 0:
                        return
                    state["left"] -= 1
                data = jpegs[i % len(jpegs)]
                i += 1
                t = time.perf_counter()
                r = client.post(path, files={"image": ("a.jpg", data, "image/jpeg")})
                elapsed = time.perf_counter() - t
                with lock:
                    if r.status_code == ok:
                        latencies.append(elapsed)
                    else:
                        state["errors"] += 1

    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "images_per_s": len(latencies) / wall,
            "errors": state["errors"], **percentiles(latencies)}  # fmt: skip
