"""The vision service as a real process, and the photos its tests describe.

:func:`running_vision` starts ``twin-vision serve`` (the installed console
script of apps/vision) with settings given as ``TWIN_VISION__*`` environment
overrides (HTTPS when they name ``SERVER__TLS_CERT_FILE``, its CA given as
``ca``), waits for ``/health`` and stops it afterwards. :func:`photo`
encodes one of scikit-image's bundled photos (no download) as JPEG or PNG.
"""

from __future__ import annotations

import io
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from skimage import data

from helpers.ports import free_port


def photo(name: str, fmt: str = "JPEG") -> bytes:
    """scikit-image's ``data.<name>()`` photo encoded as ``fmt``."""
    pixels = np.asarray(getattr(data, name)())
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., :3] if pixels.ndim == 3 else pixels).convert("RGB").save(
        buffer, format=fmt
    )
    return buffer.getvalue()


@dataclass
class VisionProcess:
    """A running ``twin-vision serve``."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_vision(
    tmp_path: Path,
    settings: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    *,
    ca: Path | None = None,
) -> Iterator[VisionProcess]:
    """``twin-vision serve`` on a free port with ``settings`` (``SECTION__KEY``: value);
    ``ca``: the CA that signed ``SERVER__TLS_CERT_FILE``, trusted by the health check."""
    executable = shutil.which("twin-vision")
    assert executable, "twin-vision is not installed (uv sync)"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_VISION__")}
    env["TWIN_VISION__SERVER__PORT"] = str(port)
    env.update({f"TWIN_VISION__{key}": value for key, value in (settings or {}).items()})
    log_path = tmp_path / f"vision-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [executable, "serve"], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    scheme = "https" if (settings or {}).get("SERVER__TLS_CERT_FILE") else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=ca) if ca else True
    running = VisionProcess(url, process, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, f"twin-vision exited:\n{running.log()}"
            try:
                if httpx.get(f"{url}/health", timeout=2, verify=verify).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"twin-vision not healthy:\n{running.log()}"
            time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
