"""Images/s and latencies: the raw onnxruntime session, the service over HTTP, the naive
per-request PyTorch baseline, and JPEG decoding; and the CPU time each of them costs per
image, which, unlike images/s, hardly depends on what else the machine is doing."""

from __future__ import annotations

import http.client
import itertools
import statistics
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
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
    threads: int, min_seconds: float, spinning: bool | None = None, device: str = "cpu",
    instances: int = 1, mixed: bool = False,
) -> list[dict]:  # fmt: skip
    """Images/s of direct `session.run` calls at each batch size (after one warm-up call), the
    process CPU time per image they cost (this process does nothing else meanwhile), and the
    providers the session runs on. `instances` threads call the one session at once, as the
    service's engine instances do; `threads` is the session's intra-op threads. `mixed` adds
    a row whose calls take the sizes of `batches` in turn, as a busy service's calls do (a
    new input shape each call), to set beside the rows of one size each."""
    loaded = load_model(store, model, precision=precision, device=device, threads=threads or None,
                        spinning=spinning)  # fmt: skip
    inputs = {b: batch_of(images, b) for b in batches}
    runs = [(b, [inputs[b]]) for b in batches]
    if mixed:
        runs.append(("mixed " + ",".join(map(str, batches)), list(inputs.values())))
    return [{"precision": precision, "batch": label, "instances": instances, "threads": threads,
             **raw_rate(loaded.session, xs, instances, min_seconds),
             "providers": loaded.session.get_providers()}
            for label, xs in runs]  # fmt: skip


def batch_of(images: np.ndarray | list[np.ndarray], size: int) -> np.ndarray:
    """`size` of `images`, taken in turn (repeating them if there are fewer), stacked."""
    return np.stack([images[i % len(images)] for i in range(size)])


def raw_rate(session, inputs: list[np.ndarray], instances: int, min_seconds: float) -> dict:
    """`instances` threads calling `session` on `inputs` in turn for at least `min_seconds`
    (after one warm-up call): images/s, the median call's ms and the process CPU-ms per
    image (this process does nothing else meanwhile)."""
    call, sizes = calls_in_turn(session, inputs)
    times, wall, cpu = timed_calls(call, instances, min_seconds)
    n = sum(sizes[1:])  # the first call was the warm-up
    return {
        "calls": len(times),
        "images_per_s": n / wall,
        "call_ms_p50": 1000 * statistics.median(times),
        "cpu_ms_per_image": 1000 * cpu / n,
    }


def calls_in_turn(session, inputs: list[np.ndarray]) -> tuple[Callable[[], object], list[int]]:
    """A session call that runs the next of `inputs` each time (its callers share the turn),
    and the list it fills with the size of each call's batch, in order."""
    turn, sizes, lock = itertools.cycle(inputs), [], threading.Lock()

    def call() -> object:
        with lock:
            x = next(turn)
            sizes.append(len(x))
        return session.run(None, {"images": x})

    return call, sizes


def timed_calls(call: Callable[[], object], callers: int, min_seconds: float):
    """`callers` threads each running `call` until `min_seconds` have passed and every
    thread made 3 calls: (seconds of each call, wall seconds, process CPU seconds)."""
    call()  # warm-up
    times: list[float] = []
    lock = threading.Lock()

    def caller() -> None:
        while True:
            with lock:
                if len(times) >= 3 * callers and time.perf_counter() - start > min_seconds:
                    return
            t = time.perf_counter()
            call()
            with lock:
                times.append(time.perf_counter() - t)

    start, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times, time.perf_counter() - start, time.process_time() - cpu


def decode_times(jpegs: list[bytes], repeats: int) -> dict:
    """Decode (draft mode) + resize to 256x256 of each JPEG, as the service does: wall-clock
    percentiles and the mean CPU time of this thread per image."""
    times, cpu = [], time.thread_time()
    for _ in range(repeats):
        for data in jpegs:
            t = time.perf_counter()
            decode(data, max_bytes=BIG, max_pixels=BIG)
            times.append(time.perf_counter() - t)
    cpu = time.thread_time() - cpu
    return {**percentiles(times), "cpu_ms_mean": 1000 * cpu / len(times)}


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


def multipart(jpeg: bytes, boundary: str) -> bytes:
    """A multipart/form-data body with `jpeg` as the field `image`."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n")  # fmt: skip
    return head.encode() + jpeg + f"\r\n--{boundary}--\r\n".encode()


def load(url: str, path: str, jpegs: list[bytes], clients: int, requests: int,
         warmup: int = 2, ok: int = 200,
         counters: Callable[[], dict[str, float]] | None = None) -> dict:  # fmt: skip
    """`clients` threads, each posting one JPEG per request to `path` until `requests`
    requests are done in all; images/s and latency percentiles of the answers `ok`, and the
    CPU this load generator spent per request (it shares the machine with the server).

    Each client keeps one HTTP/1.1 connection (`http.client`) and sends bodies encoded
    once beforehand, so the generator takes as little of the server's CPU as it can.
    `counters` (e.g. the server's CPU seconds) is read once every client has warmed up and
    again when the last answer is in; their increases are returned as `counted`."""
    target = urllib.parse.urlsplit(url)
    boundary = uuid.uuid4().hex
    bodies = [multipart(j, boundary) for j in jpegs]
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    lock = threading.Lock()
    state = {"left": requests, "errors": 0}
    latencies: list[float] = []

    def post(conn: http.client.HTTPConnection, body: bytes) -> int:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=600)
        try:
            for i in range(warmup):
                post(conn, bodies[(n + i) % len(bodies)])
            warmed.wait()
            barrier.wait()
            i = n
            while True:
                with lock:
                    if state["left"] <= 0:
                        return
                    state["left"] -= 1
                body = bodies[i % len(bodies)]
                i += 1
                t = time.perf_counter()
                status = post(conn, body)
                elapsed = time.perf_counter() - t
                with lock:
                    if status == ok:
                        latencies.append(elapsed)
                    else:
                        state["errors"] += 1
        finally:
            conn.close()

    warmed, barrier = threading.Barrier(clients + 1), threading.Barrier(clients + 1)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    warmed.wait()
    before = counters() if counters else {}
    barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    row = {"clients": clients, "images_per_s": len(latencies) / wall,
           "errors": state["errors"], "client_cpu_ms_per_request": 1000 * cpu / requests,
           **percentiles(latencies)}  # fmt: skip
    if counters:
        after = counters()
        row["counted"] = {k: after[k] - before[k] for k in before}
    return row


def server_cpu(url: str) -> dict[str, float]:
    """The server's CPU seconds from its /metrics: the whole process's, and its onnxruntime
    session's (`alexnet_engine_cpu_seconds_total`, counted by the engine itself); and its
    engine calls and the images in them."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {"process_cpu_seconds_total": "process",
              "alexnet_engine_cpu_seconds_total": "engine",
              "alexnet_batch_images_count": "calls",
              "alexnet_batch_images_sum": "batched"}  # fmt: skip
    out = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=60).text):
        for sample in family.samples:
            if sample.name in wanted:
                out[wanted[sample.name]] = sample.value
    if len(out) != len(wanted):
        raise RuntimeError(f"the server's /metrics lacks {set(wanted.values()) - set(out)}")
    return out
