"""Prometheus metrics of one app instance (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


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
        self.queue_depth = Gauge(
            "alexnet_queue_images", "images waiting for the engine", registry=r
        )
        self.gallery_items = Gauge("alexnet_gallery_items", "items in the gallery", registry=r)
        self.images = Counter("alexnet_images_total", "images decoded", ["outcome"], registry=r)
        self.model = Info("alexnet_model", "the model in use", registry=r)

    def observe_batch(self, images: int, seconds: float) -> None:
        self.batch_size.observe(images)
        self.inference.observe(seconds)
