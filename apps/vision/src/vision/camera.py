"""Camera sources and the loop that samples them.

A source gives one frame per call: an HTTP snapshot (JPEG/PNG), an MJPEG
stream (``multipart/x-mixed-replace``; the latest whole JPEG of the open
stream), or anything OpenCV's ``VideoCapture`` opens (a V4L2 device, an RTSP
URL). :class:`CameraLoop` samples its source at ``fps``, describes each frame
with the default describer, and keeps the latest scene. A failing source is
retried with exponential backoff (``retry_min_s`` doubling to
``retry_max_s``); its state is what ``/health`` reports. Nothing a camera does
stops the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import httpx
from twin_common.tasks import BackgroundTask

from vision.config import CameraConfig
from vision.images import Frame, ImageError, decode_image

#: Largest frame a camera may send, in bytes and pixels.
MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_FRAME_PIXELS = 40_000_000


class CameraError(Exception):
    """The source gave no frame."""


class Source(Protocol):
    """Gives the current frame, or raises :class:`CameraError`."""

    async def frame(self) -> Frame: ...

    async def close(self) -> None: ...


class HttpSource:
    """A snapshot URL (one image per GET) or an MJPEG stream (kept open)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(timeout=timeout_s, verify=True)
        self._stream: Any = None
        self._chunks: Any = None
        self._buffer = b""

    async def frame(self) -> Frame:
        try:
            if self._stream is not None:
                return await asyncio.wait_for(self._next_mjpeg(), self.timeout_s)
            request = self._client.build_request("GET", self.url)
            response = await self._client.send(request, stream=True)
            kind = response.headers.get("content-type", "")
            if response.status_code != 200:
                await response.aclose()
                raise CameraError(f"{self.url} answered HTTP {response.status_code}")
            if kind.startswith("multipart/x-mixed-replace"):
                self._stream, self._chunks = response, response.aiter_bytes()
                return await asyncio.wait_for(self._next_mjpeg(), self.timeout_s)
            data = await response.aread()
            return _decode(data, self.url)
        except (httpx.HTTPError, TimeoutError, StopAsyncIteration) as exc:
            await self._drop_stream()
            raise CameraError(f"{self.url}: {exc!r}") from exc
        except CameraError:
            await self._drop_stream()
            raise

    async def _next_mjpeg(self) -> Frame:
        """The newest complete JPEG (SOI..EOI) in the stream's bytes so far, or the next one."""
        while True:
            end = self._buffer.rfind(b"\xff\xd9")
            start = self._buffer.rfind(b"\xff\xd8", 0, end) if end >= 0 else -1
            if start >= 0:
                jpeg, self._buffer = self._buffer[start : end + 2], self._buffer[end + 2 :]
                return _decode(jpeg, self.url)
            if len(self._buffer) > MAX_FRAME_BYTES:
                raise CameraError(f"{self.url}: no JPEG frame in {len(self._buffer)} bytes")
            self._buffer += await anext(self._chunks)

    async def _drop_stream(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await self._stream.aclose()
        self._stream, self._chunks, self._buffer = None, None, b""

    async def close(self) -> None:
        await self._drop_stream()
        await self._client.aclose()


class OpenCVSource:
    """A V4L2 device or an RTSP URL through ``cv2.VideoCapture``, reopened after a failure."""

    def __init__(self, source: str, timeout_s: float) -> None:
        self.source = source
        self.timeout_s = timeout_s
        self._capture: cv2.VideoCapture | None = None

    def _read(self) -> Frame:
        if self._capture is None:
            backend = cv2.CAP_V4L2 if self.source.startswith("/dev/") else cv2.CAP_FFMPEG
            capture = cv2.VideoCapture(self.source, backend)
            if not capture.isOpened():
                raise CameraError(f"OpenCV cannot open {self.source}")
            self._capture = capture
        # A live capture buffers frames: grab drops the stale one, retrieve decodes the newest.
        self._capture.grab()
        ok, frame = self._capture.retrieve()
        if not ok or frame is None:
            self._release()
            raise CameraError(f"{self.source} gave no frame")
        return frame

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    async def frame(self) -> Frame:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._read), self.timeout_s)
        except TimeoutError as exc:
            raise CameraError(f"{self.source}: no frame within {self.timeout_s} s") from exc

    async def close(self) -> None:
        self._release()


def _decode(data: bytes, where: str) -> Frame:
    try:
        return decode_image(data, MAX_FRAME_BYTES, MAX_FRAME_PIXELS)
    except ImageError as exc:
        raise CameraError(f"{where} sent no usable image: {exc.message}") from exc


def open_source(config: CameraConfig) -> Source | None:
    """The source ``config`` names, or None for no camera."""
    if config.kind == "none":
        return None
    if config.kind == "http":
        return HttpSource(config.source, config.timeout_s)
    return OpenCVSource(config.source, config.timeout_s)


@dataclass
class CameraState:
    """What ``/health`` says about the camera."""

    source: str
    state: str = "starting"
    frames: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_frame_at: float | None = None
    retry_in_s: float | None = None

    def report(self) -> dict[str, Any]:
        """The state as JSON for ``/health``."""
        return {
            "source": self.source,
            "state": self.state,
            "frames": self.frames,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_frame_at": self.last_frame_at,
            "retry_in_s": self.retry_in_s,
        }


class CameraLoop:
    """Samples one source at ``fps`` and hands each frame to ``on_frame``; retries with backoff."""

    def __init__(
        self,
        config: CameraConfig,
        source: Source,
        on_frame: Callable[[Frame, float], Awaitable[None]],
        on_error: Callable[[str], None],
    ) -> None:
        self.config = config
        self.source = source
        self.on_frame = on_frame
        self.on_error = on_error
        self.state = CameraState(source=config.source)
        self._task = BackgroundTask(self._run, "camera-loop")

    async def _run(self) -> None:
        period = 1.0 / self.config.fps
        backoff = self.config.retry_min_s
        while True:
            started = time.monotonic()
            try:
                frame = await self.source.frame()
            except CameraError as exc:
                self.state.state = "failing"
                self.state.consecutive_failures += 1
                self.state.last_error = str(exc)
                self.state.retry_in_s = backoff
                self.on_error(str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.retry_max_s)
                continue
            taken = time.time()
            backoff = self.config.retry_min_s
            await self.on_frame(frame, taken)
            # Counted once described, so a reader that sees N frames finds the Nth scene.
            self.state.state = "ok"
            self.state.consecutive_failures = 0
            self.state.retry_in_s = None
            self.state.frames += 1
            self.state.last_frame_at = taken
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    def start(self) -> None:
        """Start sampling in the background."""
        self._task.start()

    async def stop(self) -> None:
        """Stop sampling and close the source."""
        await self._task.stop()
        await self.source.close()
