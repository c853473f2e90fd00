"""What a CUDA GPU does with this project: training steps, JPEG decoding, the onnxruntime
engine and the service. Each part prints a table and writes OUT/gpu-PART.json.

    python -m bench.gpu train-steps --archs paper bn --batches 128 256
    python -m bench.gpu decode --batches 1 16 64 256
    python -m bench.gpu engine --store STORE --model NAME:1 --precisions fp32 fp16
    python -m bench.gpu service --store STORE --model NAME --precision fp16 --clients 1 4 16 64

`train-steps` runs `training.train.train_one_epoch`, the real step (augmentation on the
device, bf16 autocast, channels_last, the optimizer), on batches already in GPU memory: the
images/s the GPU alone allows, to set beside a real run's (`alexnet train`'s log), which
includes the loader. `bench/gpu_check.sh` runs every part in one go on a GPU machine. Every
part also runs on the CPU (`--device cpu`), which is how the tests check it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.gpu")
PARTS = ("train-steps", "decode", "engine", "service")


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def train_steps(archs: list[str], batches: list[int], steps: int, device: str) -> list[dict]:
    """Images/s and peak GPU memory of the real training step on in-memory batches."""
    import torch

    from training.model import build_model
    from training.presets import Normalize, PCALighting, TrainAugment
    from training.train import TrainConfig, fast_bf16, make_optimizer, train_one_epoch

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    for arch in archs:
        for batch in batches:
            torch.manual_seed(0)
            model = build_model(arch, 1000).to(dev).to(memory_format=torch.channels_last)
            optimizer = make_optimizer(TrainConfig(data=Path(".")), model)
            mean = torch.full((3, 256, 256), 120.0)
            augment = TrainAugment(
                Normalize(mean), model.crop_size, PCALighting(torch.ones(3), torch.eye(3))
            ).to(dev)
            images = torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8, device=dev)
            labels = torch.randint(0, 1000, (batch,), device=dev)
            data = [(images, labels, 0)] * steps
            generator = torch.Generator(device=dev)
            generator.manual_seed(0)
            amp = fast_bf16(dev)
            kwargs = dict(device=dev, generator=generator, amp=amp, channels_last=True,
                          epoch=0, progress=False)  # fmt: skip
            train_one_epoch(model, data[:3], augment, optimizer, **kwargs)  # warm-up, cudnn
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                torch.cuda.reset_peak_memory_stats(dev)
            result = train_one_epoch(model, data, augment, optimizer, **kwargs)
            peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
            rows.append({"arch": arch, "batch": batch, "steps": steps, "bf16": amp,
                         "images_per_s": result["images_per_s"],
                         "step_ms": 1000 * batch / result["images_per_s"],
                         "peak_gib": peak, "loss": result["loss"]})  # fmt: skip
            log.info("train-steps %s", rows[-1])
            del model, optimizer, images
    return rows


def decode(batches: list[int], repeats: int, device: str) -> list[dict]:
    """JPEGs decoded per second: torchvision's nvJPEG on the GPU (a list per call), against
    the service's own decoder (Pillow, draft mode, resized to 256x256) on one CPU thread."""
    import torch
    from torchvision.io import decode_jpeg

    from bench.photos import jpeg, photo
    from service.decode import decode as service_decode

    sizes = {"256x256": (256, 256), "500x375": (500, 375)}
    rows = []
    for size, (w, h) in sizes.items():
        jpegs = [jpeg(photo(w, h, seed)) for seed in range(16)]
        cpu_start = time.perf_counter()
        for data in jpegs * repeats:
            service_decode(data, max_bytes=1 << 30, max_pixels=1 << 30)
        cpu_rate = len(jpegs) * repeats / (time.perf_counter() - cpu_start)
        tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in jpegs]
        for batch in batches:
            chunk = [tensors[i % len(tensors)] for i in range(batch)]
            decode_jpeg(chunk, device=device)  # warm-up: nvJPEG's handles and buffers
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(repeats):
                out = decode_jpeg(chunk, device=device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            rate = batch * repeats / (time.perf_counter() - start)
            assert out[0].shape == (3, h, w), out[0].shape
            rows.append({"size": size, "batch": batch, "device_images_per_s": rate,
                         "pillow_1thread_images_per_s": cpu_rate})  # fmt: skip
            log.info("decode %s", rows[-1])
    return rows


def engine(store: Path, model: str, precisions: list[str], batches: list[int], device: str,
           min_seconds: float) -> list[dict]:  # fmt: skip
    """The raw onnxruntime session on `device`: images/s per batch, and which provider ran."""
    from bench import photos, throughput
    from core.imaging import load_256

    pixels = np.stack([load_256(j) for j in photos.photo_jpegs("500x375", count=8)])
    rows = []
    for precision in precisions:
        rows += throughput.engine(store, model, precision, pixels, batches, threads=0,
                                  min_seconds=min_seconds, device=device)  # fmt: skip
        log.info("engine %s: %s", precision, rows[-1])
    return rows


def service(store: Path, model: str, precision: str, clients: list[int], requests: int,
            device: str, work: Path) -> list[dict]:  # fmt: skip
    """`alexnet serve` on `device`, POST /predict from `clients` threads of this process."""
    from alexnet.local_server import serve
    from bench import photos, throughput

    jpegs = photos.photo_jpegs("500x375", count=8)
    gallery = work / "gallery-empty"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    env = {"precision": precision, "device": device, "model": model}
    with serve(store, gallery, log=work / "server.log", timeout=600, **env) as server:
        for n in clients:
            row = throughput.load(server.url, "/predict", jpegs, n, max(requests, 8 * n),
                                  counters=lambda: throughput.server_cpu(server.url))  # fmt: skip
            counted = row.pop("counted")
            row["batch_mean"] = counted["batched"] / max(counted["calls"], 1)
            row["process_cpu_ms_per_image"] = 1000 * counted["process"] / max(row["n"], 1)
            rows.append({"precision": precision, "size": "500x375", **row})
            log.info("service %s", rows[-1])
    return rows


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    keys = [k for k in rows[0] if k not in ("providers",)]
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [" | ".join(keys), " | ".join("---" for _ in keys)]
    lines += [" | ".join(fmt(r.get(k)) for k in keys) for r in rows]
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=PARTS)
    p.add_argument("--device", default="cuda", help="cuda or cpu (default: cuda)")
    p.add_argument("--out", type=Path, default=Path("bench/results-gpu"))
    p.add_argument("--archs", nargs="+", default=["paper", "bn"])
    p.add_argument("--batches", nargs="+", type=int, default=None)
    p.add_argument("--steps", type=int, default=20, help="train-steps: timed steps")
    p.add_argument("--repeats", type=int, default=20, help="decode: passes over the batch")
    p.add_argument("--store", type=Path, default=Path("model_store"))
    p.add_argument("--model", default=None, help="engine: NAME:VERSION; service: NAME")
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16"])
    p.add_argument("--precision", default="fp16", help="service: the served file")
    p.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16, 64])
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--work", type=Path, default=Path("bench/work-gpu"))
    return p


def main(args: argparse.Namespace) -> list[dict]:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.part == "train-steps":
        rows = train_steps(args.archs, args.batches or [128, 256], args.steps, args.device)
    elif args.part == "decode":
        rows = decode(args.batches or [1, 16, 64, 256], args.repeats, args.device)
    elif args.part == "engine":
        rows = engine(args.store, args.model, args.precisions, args.batches or [1, 8, 32, 64],
                      args.device, args.min_seconds)  # fmt: skip
    else:
        rows = service(args.store, args.model, args.precision, args.clients, args.requests,
                       args.device, args.work)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"part": args.part, "device": device_name(args.device), "started": started,
              "cpus": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()},
              "rows": rows}  # fmt: skip
    (args.out / f"gpu-{args.part}.json").write_text(json.dumps(record, indent=2))
    print(f"\n{args.part} on {record['device']}\n{table(rows)}")
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    main(get_args_parser().parse_args())
