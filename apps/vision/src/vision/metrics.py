"""Prometheus metrics of the service (``/metrics``), in one registry per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Describe latency, frames processed, errors by kind, the camera's state."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.describe_seconds = Histogram(
            "vision_describe_seconds",
            "Time to describe one image, by source and describer.",
            ["source", "describer"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.frames = Counter(
            "vision_frames_total",
            "Frames described, by source (upload, camera).",
            ["source"],
            registry=self.registry,
        )
        self.errors = Counter(
            "vision_errors_total",
            "Errors by kind (a refused input's kind, camera, vlm).",
            ["kind"],
            registry=self.registry,
        )
        self.camera_up = Gauge(
            "vision_camera_up",
            "1 while the camera delivers frames, 0 while it is being retried.",
            registry=self.registry,
        )
