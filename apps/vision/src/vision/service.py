"""The vision service's state: the describers, the camera's latest scene, the metrics.

:class:`Vision` is what the HTTP endpoints call. CPU work runs in a worker
thread so the event loop keeps answering ``/health`` while a frame is
described.
"""

from __future__ import annotations

import asyncio
import logging
import time

from vision.camera import CameraLoop, open_source
from vision.config import VisionConfig
from vision.describer import DefaultDescriber
from vision.findings import Description, Findings, Scene
from vision.images import Frame, encode_jpeg
from vision.measures import MotionTracker
from vision.metrics import Metrics
from vision.sentence import sentence
from vision.vlm import VLMError, VLMLocator, ask

log = logging.getLogger("vision")

DEFAULT_QUESTION = "Describe the scene briefly."


class NoFrame(Exception):
    """No camera is configured, or it has not delivered a frame yet."""


class Vision:
    """Describes uploads and the camera's frames."""

    def __init__(self, config: VisionConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.default = DefaultDescriber(config.detect)
        self.vlm = VLMLocator(config.vlm)
        self._motion = MotionTracker(config.detect.motion_threshold)
        self.scene: Scene | None = None
        self._frame: tuple[Frame, float] | None = None
        source = open_source(config.camera)
        self.camera = (
            CameraLoop(config.camera, source, self._on_frame, self._on_camera_error)
            if source is not None
            else None
        )

    async def start(self) -> None:
        """Start the camera loop and the VLM's Consul lookup (each only when configured)."""
        if self.camera is not None:
            self.camera.start()
        self.vlm.start()

    async def stop(self) -> None:
        """Stop both."""
        if self.camera is not None:
            await self.camera.stop()
        await self.vlm.stop()

    async def describe(
        self,
        frame: Frame,
        question: str | None,
        source: str,
        ocr: bool,
        use_vlm: bool = True,
    ) -> Description:
        """Findings from the default describer, the sentence from the VLM when there is one."""
        started = time.perf_counter()
        findings = await asyncio.to_thread(self.default.findings, frame, ocr)
        text, describer, fallback = sentence(findings), "default", None
        url = self.vlm.url() if use_vlm else None
        if url is not None:
            try:
                jpeg = await asyncio.to_thread(encode_jpeg, frame)
                text = await ask(self.config.vlm, url, jpeg, question or DEFAULT_QUESTION)
                describer = "vlm"
            except VLMError as exc:
                self.metrics.errors.labels("vlm").inc()
                fallback = f"{exc}; the default describer answered"
                log.warning("vlm fallback: %s", exc)
        elapsed = time.perf_counter() - started
        self.metrics.describe_seconds.labels(source, describer).observe(elapsed)
        self.metrics.frames.labels(source).inc()
        return Description(
            description=text,
            describer=describer,
            fallback=fallback,
            question=question,
            findings=findings,
            source=source,  # type: ignore[arg-type]
            latency_ms=round(elapsed * 1000, 1),
        )

    async def describe_camera(self, question: str | None, ocr: bool) -> Description:
        """The camera's newest frame described now, with ``question``."""
        if self._frame is None:
            raise NoFrame(self._no_frame_reason())
        frame, _ = self._frame
        description = await self.describe(frame, question, "camera", ocr)
        if self.scene is not None:
            description.findings.motion = self.scene.findings.motion
        return description

    def latest_scene(self) -> Scene:
        """The newest scene the camera loop described, its age brought up to date."""
        if self.scene is None:
            raise NoFrame(self._no_frame_reason())
        return self.scene.model_copy(update={"age_s": round(time.time() - self.scene.timestamp, 3)})

    def _no_frame_reason(self) -> str:
        if self.camera is None:
            return "no camera is configured (camera.source); send an image to POST /describe"
        state = self.camera.state
        if state.last_error:
            return f"the camera {state.source} has no frame yet: {state.last_error}"
        return f"the camera {state.source} has not delivered a frame yet"

    async def _on_frame(self, frame: Frame, taken: float) -> None:
        motion = self._motion.update(frame)
        self._frame = (frame, taken)
        started = time.perf_counter()
        findings: Findings = await asyncio.to_thread(
            self.default.findings, frame, self.config.camera.ocr, motion
        )
        elapsed = time.perf_counter() - started
        self.metrics.describe_seconds.labels("camera", "default").observe(elapsed)
        self.metrics.frames.labels("camera").inc()
        self.metrics.camera_up.set(1)
        self.scene = Scene(
            description=sentence(findings),
            describer="default",
            findings=findings,
            source="camera",
            latency_ms=round(elapsed * 1000, 1),
            timestamp=taken,
            age_s=0.0,
            camera=self.config.camera.source,
        )

    def _on_camera_error(self, message: str) -> None:
        self.metrics.errors.labels("camera").inc()
        self.metrics.camera_up.set(0)
        log.warning("camera: %s", message)

    def health(self) -> dict[str, object]:
        """``/health``: degraded (still 200) while the camera is failing."""
        camera = self.camera.state.report() if self.camera is not None else None
        reasons = []
        if camera is not None and camera["state"] == "failing":
            reasons.append(f"camera failing: {camera['last_error']}")
        if self.vlm.error:
            reasons.append(self.vlm.error)
        return {
            "status": "degraded" if reasons else "ok",
            "reasons": reasons,
            "camera": camera,
            "vlm": {"url": self.vlm.url(), "error": self.vlm.error},
        }
