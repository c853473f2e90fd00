"""What a CUDA GPU does with this project: training steps, JPEG decoding, the onnxruntime
engine and the service. Each part prints a table and writes OUT/gpu-PART.json.

    python -m bench.gpu train-steps --archs paper bn --batches 128 256
    python -m bench.gpu decode --batches 1 16 64 256
    python -m bench.gpu engine --store STORE --model NAME:1 --precisions fp32 fp16 [--mixed]
    python -m bench.gpu service --store STORE --model NAME --precision fp16 --clients 1 4 16 64
        (with --instances 1 2 --threads 0 4: a server for each pair)
    python -m bench.gpu fp16 --store STORE --model NAME:1

`fp16` checks float16 arithmetic where it really happens (on CUDA; onnxruntime's CPU
provider computes float16 layers in float32): the paper's LRN alone at growing activations,
then the model as trained and with conv1 scaled 8x (activations of an ImageNet-trained
network's size), each converted by `training.quantize.convert_fp16` and, for comparison,
by onnxconverter-common with no node kept in float32 ("plain"): NaNs, top-1 agreement
with fp32 on the same provider, and images/s at the first of --batches (default 64).

`train-steps` runs `training.train.train_one_epoch`, the real step (augmentation on the
device, bf16 autocast, channels_last, the optimizer), on batches already in GPU memory: the
images/s the GPU alone allows, to set beside a real run's (`alexnet train`'s log), which
includes the loader. `bench/gpu_check.sh` runs every part in one go on a GPU machine. Every
part also runs on the CPU (`--device cpu`), which is how the tests check it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.gpu")
PARTS = ("train-steps", "decode", "engine", "service", "fp16")


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
           min_seconds: float, mixed: bool = False) -> list[dict]:  # fmt: skip
    """The raw onnxruntime session on `device`: images/s per batch, and which provider ran;
    with `mixed`, also calls that take the batch sizes in turn (`throughput.engine`)."""
    from bench import photos, throughput
    from core.imaging import load_256

    pixels = np.stack([load_256(j) for j in photos.photo_jpegs("500x375", count=8)])
    rows = []
    for precision in precisions:
        rows += throughput.engine(store, model, precision, pixels, batches, threads=0,
                                  min_seconds=min_seconds, device=device, mixed=mixed)  # fmt: skip
        log.info("engine %s: %s", precision, rows[-1])
    return rows


def service(store: Path, model: str, precision: str, clients: list[int], requests: int,
            device: str, work: Path, instances: Sequence[int],
            threads: Sequence[int] = (0,)) -> list[dict]:  # fmt: skip
    """`alexnet serve` on `device`, POST /predict from `clients` threads of this process.

    One server per pair of `instances` (ALEXNET_INSTANCES: session calls at once) and
    `threads` (ALEXNET_THREADS: onnxruntime's intra-op threads; 0: its default)."""
    from alexnet.local_server import serve
    from bench import photos, throughput

    jpegs = photos.photo_jpegs("500x375", count=8)
    gallery = work / "gallery-empty"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for calls, pool in itertools.product(instances, threads):
        env = {"precision": precision, "device": device, "model": model, "instances": str(calls)}
        if pool:
            env["threads"] = str(pool)
        with serve(store, gallery, log=work / "server.log", timeout=600, **env) as server:
            for n in clients:
                count = lambda: throughput.server_cpu(server.url)  # noqa: E731
                row = throughput.load(server.url, "/predict", jpegs, n, max(requests, 8 * n),
                                      counters=count)  # fmt: skip
                counted = row.pop("counted")
                row["batch_mean"] = counted["batched"] / max(counted["calls"], 1)
                row["process_cpu_ms_per_image"] = 1000 * counted["process"] / max(row["n"], 1)
                rows.append({"precision": precision, "instances": calls, "threads": pool or None,
                             "size": "500x375", **row})  # fmt: skip
                log.info("service %s", rows[-1])
    return rows


def top1_agreement(probs: np.ndarray, expected: np.ndarray) -> float:
    """The share of images whose top-1 class in `probs` is `expected`'s. An image with a NaN
    or infinite probability disagrees (argmax would call a row of NaN class 0)."""
    finite = np.isfinite(probs).all(1)
    return float(((probs.argmax(1) == expected.argmax(1)) & finite).mean())


def fp16(store: Path, model: str, device: str, work: Path, min_seconds: float,
         batch_size: int) -> list[dict]:  # fmt: skip
    """float16 against float32 on `device`: the paper's LRN alone, then `model` (see above)."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper
    from onnxconverter_common import float16

    from bench import photos
    from core import store as model_store
    from core.imaging import load_256
    from core.model_loader import providers
    from training.model import LocalResponseNorm
    from training.onnx_lrn import ChannelWindowLRN
    from training.quantize import convert_fp16

    work.mkdir(parents=True, exist_ok=True)

    def session(path: Path) -> ort.InferenceSession:
        return ort.InferenceSession(str(path), providers=providers(device))

    def both(src: Path) -> dict[str, Path]:
        """src's float16 copies: the project's, and onnxconverter-common's plain one (every
        float tensor in float16: the project's conversion before `float32_squares`)."""
        # the input's uint8 -> float Cast stays float32, as in ours
        plain = float16.convert_float_to_float16(
            onnx.load(str(src)), keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, "Cast"])  # fmt: skip
        onnx.save(plain, str(work / f"{src.stem}.plain.onnx"))
        convert_fp16(src, work / f"{src.stem}.ours.onnx")
        return {"plain": work / f"{src.stem}.plain.onnx", "ours": work / f"{src.stem}.ours.onnx"}

    rows = []
    lrn = ChannelWindowLRN(LocalResponseNorm(), 96).eval()  # LRN1: 96 channels of 55x55
    example = torch.zeros(1, 96, 55, 55)
    torch.onnx.export(lrn, (example,), str(work / "lrn.onnx"), input_names=["a"],
                      output_names=["b"], opset_version=18, dynamo=True,
                      external_data=False)  # fmt: skip
    lrn_files, reference = both(work / "lrn.onnx"), session(work / "lrn.onnx")
    rng = np.random.default_rng(0)
    for scale in (25, 50, 100, 200, 400):
        a = (np.maximum(rng.standard_normal((1, 96, 55, 55)), 0) * scale).astype(np.float32)
        expected = reference.run(None, {"a": a})[0]
        for name, path in lrn_files.items():
            b = session(path).run(None, {"a": a})[0]
            rows.append({"graph": "LRN1", "x_max": float(a.max()), "file": name,
                         "nan": int(np.isnan(b).sum()),
                         "max_error": float(np.nanmax(abs(b - expected), initial=0))})  # fmt: skip
            log.info("fp16 %s", rows[-1])
    images = np.stack([load_256(j) for j in photos.photo_jpegs("500x375", count=16)])
    batch = np.resize(images, (batch_size, *images.shape[1:]))
    fp32 = model_store.resolve(store, model) / "model.onnx"
    for factor in (1, 8):
        src = fp32
        if factor != 1:  # conv1's weights and bias times `factor`
            m = onnx.load(str(fp32))
            conv1 = next(n for n in m.graph.node if n.op_type == "Conv")
            for init in m.graph.initializer:
                if init.name in conv1.input[1:]:
                    scaled = numpy_helper.to_array(init) * np.float32(factor)
                    init.CopyFrom(numpy_helper.from_array(scaled, init.name))
            src = work / f"conv1x{factor}.onnx"
            onnx.save(m, str(src))
        expected = session(src).run(["probs"], {"images": images})[0]
        for name, path in both(src).items():
            s = session(path)
            probs = s.run(["probs"], {"images": images})[0]
            s.run(None, {"images": batch})
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < min_seconds:
                s.run(None, {"images": batch})
                n += len(batch)
            rows.append({"graph": f"{model} conv1 x{factor}", "file": name,
                         "nan_images": int((~np.isfinite(probs).all(1)).sum()),
                         "top1_agreement": top1_agreement(probs, expected),
                         "batch": batch_size, "images_per_s": n / (time.perf_counter() - start),
                         "provider": s.get_providers()[0]})  # fmt: skip
            log.info("fp16 %s", rows[-1])
    return rows


def table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "providers"))
    fmt = lambda v: (f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}") if isinstance(v, float) else str(v)  # noqa: E731
    lines = [" | ".join(keys), " | ".join("---" for _ in keys)]
    lines += [" | ".join(fmt(r.get(k, "")) for k in keys) for r in rows]
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
    p.add_argument("--instances", nargs="+", type=int, default=[1],
                   help="service: ALEXNET_INSTANCES, one server each (default: 1)")  # fmt: skip
    p.add_argument("--threads", nargs="+", type=int, default=[0],
                   help="service: ALEXNET_THREADS, one server each with each --instances "
                   "(0, the default: onnxruntime's own count)")  # fmt: skip
    p.add_argument("--mixed", action="store_true",
                   help="engine: one more row whose calls take the --batches sizes in turn, as "
                   "a busy service's do")  # fmt: skip
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
                      args.device, args.min_seconds, args.mixed)  # fmt: skip
    elif args.part == "fp16":
        rows = fp16(args.store, args.model, args.device, args.work, args.min_seconds,
                    (args.batches or [64])[0])  # fmt: skip
    else:
        rows = service(args.store, args.model, args.precision, args.clients, args.requests,
                       args.device, args.work, args.instances, args.threads)  # fmt: skip
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
