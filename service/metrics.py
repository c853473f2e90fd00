"""Prometheus metrics of one app instance (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "alexnet_requests_total", "HTTP requests", ["method", "endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "alexnet_request_seconds", "HTTP request latency", ["endpoint"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.batch_size = Histogram(
            "alexnet_batch_images",
            "images per engine call",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.inference = Histogram(
            "alexnet_inference_seconds", "time of one engine call", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )  # fmt: skip
        self.engine_cpu = Counter(
            "alexnet_engine_cpu_seconds",
            "CPU time of the onnxruntime session's calls (the calling thread and its intra-op "
            "threads); process_cpu_seconds_total minus this is the service's own work",
            registry=r,
        )
        # process_cpu_seconds_total, process_resident_memory_bytes, ... (Linux /proc)
        ProcessCollector(registry=r)
        self.queue_depth = Gauge(
            "alexnet_queue_images", "images waiting for the engine", registry=r
        )
        self.gallery_items = Gauge("alexnet_gallery_items", "items in the gallery", registry=r)
        self.images = Counter("alexnet_images_total", "images decoded", ["outcome"], registry=r)
        self.model = Info("alexnet_model", "the model in use", registry=r)
        # a model switch (POST /models/switch) or a follow (another replica switched)
        self.switch_running = Gauge(
            "alexnet_model_switch_running", "1 while another model is being prepared", registry=r
        )
        self.switch_done = Gauge(
            "alexnet_model_switch_items_done",
            "gallery items embedded by the model being prepared (the last switch's, after it)",
            registry=r,
        )
        self.switch_total = Gauge(
            "alexnet_model_switch_items_total",
            "gallery items the model being prepared must embed (the last switch's, after it)",
            registry=r,
        )
        self.switch_eta = Gauge(
            "alexnet_model_switch_eta_seconds",
            "seconds left for the re-embedding at its pace so far (0: none running or not known)",
            registry=r,
        )
        self.switches = Counter(
            "alexnet_model_switches_total",
            "model switches (kind: switch asked here, follow of another replica's) by outcome",
            ["kind", "outcome"],
            registry=r,
        )

    def serving(self, model: str, precision: str, provider: str) -> None:
        """Name the model in use (at start-up and after a switch)."""
        self.model.info({"model": model, "precision": precision, "provider": provider})

    def observe_batch(self, images: int, seconds: float) -> None:
        self.batch_size.observe(images)
        self.inference.observe(seconds)
