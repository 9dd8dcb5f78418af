"""The vision service on 640x480 frames: describe latency, camera loop rate, peak memory.

Runs the installed ``twin-vision serve`` as its own process and measures:

- describe latency p50/p95 of ``POST /describe`` (raw JPEG) with the default
  describer, without and with OCR: the service's own time (``latency_ms``)
  and the client's round trip;
- frames per second the camera loop sustains, its sampling rate set far
  above what it can do, from a local HTTP snapshot camera;
- the service's peak resident memory (``VmHWM``) after all of it;
- the machine's load average before and after, since the latencies are
  wall-clock times and another job on the same cores stretches them.

    python benchmarks/bench_vision.py --out DIR [--frames 40] [--ocr-frames 8] [--seconds 20]

Writes ``DIR/vision.json`` and prints a table. Goal: p50 <= 50 ms without OCR.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import httpx
import numpy as np
from helpers.ports import free_port
from helpers.vision import running_vision
from PIL import Image
from skimage import data

PHOTOS = ["astronaut", "camera", "coffee", "chelsea", "rocket", "page"]
CAMERA = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    JPEG = open(sys.argv[2], "rb").read()
    class Camera(BaseHTTPRequestHandler):
        def log_message(self, *args): pass
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG)
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Camera).serve_forever()
    """
)


def frame_jpeg(name: str) -> bytes:
    """scikit-image's photo ``name`` stretched to 640x480, as JPEG."""
    pixels = np.asarray(getattr(data, name)())
    image = Image.fromarray(pixels[..., :3] if pixels.ndim == 3 else pixels).convert("RGB")
    buffer = io.BytesIO()
    image.resize((640, 480)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1),
        "n": len(ordered),
    }


def describe_latency(url: str, frames: list[bytes], count: int, ocr: bool) -> dict[str, Any]:
    server, client = [], []
    with httpx.Client(timeout=120) as http:
        # One warm-up call (OCR loads its models on first use).
        http.post(
            f"{url}/describe",
            content=frames[0],
            headers={"Content-Type": "image/jpeg"},
            params={"ocr": str(ocr).lower()},
        )
        for index in range(count):
            started = time.perf_counter()
            response = http.post(
                f"{url}/describe",
                content=frames[index % len(frames)],
                headers={"Content-Type": "image/jpeg"},
                params={"ocr": str(ocr).lower()},
            )
            client.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            server.append(float(response.json()["latency_ms"]))
    return {"service_ms": percentiles(server), "round_trip_ms": percentiles(client)}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM")


def camera_fps(tmp: Path, seconds: float) -> float:
    image = tmp / "frame.jpg"
    image.write_bytes(frame_jpeg("astronaut"))
    port = free_port()
    camera = subprocess.Popen([sys.executable, "-c", CAMERA, str(port), str(image)])
    try:
        time.sleep(1)
        settings = {"CAMERA__SOURCE": f"http://127.0.0.1:{port}/", "CAMERA__FPS": "30"}
        with running_vision(tmp, settings) as vision:

            def frames() -> int:
                return int(httpx.get(f"{vision.url}/health").json()["camera"]["frames"])

            while frames() < 2:
                time.sleep(0.2)
            start_frames, started = frames(), time.monotonic()
            time.sleep(seconds)
            return round((frames() - start_frames) / (time.monotonic() - started), 2)
    finally:
        camera.kill()
        camera.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=40, help="describes without OCR")
    parser.add_argument("--ocr-frames", type=int, default=8, help="describes with OCR")
    parser.add_argument("--seconds", type=float, default=20.0, help="camera loop run")
    args = parser.parse_args()
    frames = [frame_jpeg(name) for name in PHOTOS]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        with running_vision(Path(tmp)) as vision:
            without = describe_latency(vision.url, frames, args.frames, ocr=False)
            with_ocr = describe_latency(vision.url, frames, args.ocr_frames, ocr=True)
            peak = peak_rss_mb(vision.process.pid)
        fps = camera_fps(Path(tmp), args.seconds)
    numbers = {
        "frame": "640x480 JPEG",
        "describe_without_ocr": without,
        "describe_with_ocr": with_ocr,
        "camera_loop_fps": fps,
        "peak_rss_mb": peak,
        "load_average_1min": {
            "before": round(load_before, 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "cpu_count": os.cpu_count(),
        "goal_p50_without_ocr_ms": 50,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vision.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"{'measure':<34}{'p50':>10}{'p95':>10}")
    for label, block in (
        ("describe, no OCR (service ms)", without["service_ms"]),
        ("describe, no OCR (round trip ms)", without["round_trip_ms"]),
        ("describe, OCR (service ms)", with_ocr["service_ms"]),
        ("describe, OCR (round trip ms)", with_ocr["round_trip_ms"]),
    ):
        print(f"{label:<34}{block['p50']:>10}{block['p95']:>10}")
    print(f"camera loop: {fps} frames/s; peak memory {peak} MB")
    load = numbers["load_average_1min"]
    print(f"load average {load['before']} before, {load['after']} after, on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
