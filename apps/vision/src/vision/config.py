"""The service's configuration: one typed model loaded once from one TOML file.

``load_config(path)`` reads the TOML file (or none: every key has a default),
applies environment overrides and validates the result, with twin_common's
loader (``twin_common.config``); every error names the key and where it came
from. Overrides: ``TWIN_VISION__<SECTION>__<KEY>=value`` sets
``<section>.<key>``, read as a TOML value when it parses as one
(``TWIN_VISION__SERVER__PORT=9000``), else as a plain string. The access
token's override is always a string, as written. A relative
``server.tls_cert_file`` or ``tls_key_file`` is relative to the config file's
directory; an empty one means none.

``[server]`` is the ``[server]`` table the assistant has too
(``twin_common.config.ServerSection``): ``tls_cert_file`` and
``tls_key_file`` (HTTPS, both or neither), ``access_token``
(``Authorization: Bearer``; ``/health`` stays open) and ``metrics_access``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from twin_common.config import (
    ConfigError,
    ConfigSection,
    ServerSection,
    check_tls_files,
    load_toml_config,
)

__all__ = ["ConfigError", "VisionConfig", "load_config"]

ENV_PREFIX = "TWIN_VISION__"
#: Keys whose environment override is a string as written (secrets are never numbers).
VERBATIM_KEYS = frozenset({("server", "access_token"), ("vlm", "api_key"), ("vlm", "consul_token")})
#: Paths relative to the config file's directory; empty means none.
PATHS = ("server.tls_cert_file", "server.tls_key_file", "vlm.consul_ca_file")


class ServerConfig(ServerSection):
    """Where the HTTP service listens, what it takes in, and who may use it."""

    port: int = Field(8090, ge=1, le=65535, description="TCP port.")
    max_body_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest request body in bytes (an upload, base64 included); larger "
        "ones get 413.",
    )
    max_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Largest image in pixels (width x height), checked from the file's "
        "header before anything is decoded; larger ones get 413.",
    )


class CameraConfig(ConfigSection):
    """The camera ``/scene`` describes; none means describe on demand only."""

    source: str = Field(
        "",
        description="Empty: no camera. http(s)://... : a JPEG/PNG snapshot URL or an MJPEG "
        "stream. /dev/videoN : a V4L2 device. rtsp://... : an RTSP stream (OpenCV).",
    )
    fps: float = Field(1.0, gt=0.0, le=30.0, description="Frames sampled per second.")
    timeout_s: float = Field(5.0, gt=0.0, description="Seconds one frame may take to arrive.")
    retry_min_s: float = Field(1.0, gt=0.0, description="First wait after a failed frame.")
    retry_max_s: float = Field(60.0, gt=0.0, description="Longest wait between retries.")
    ocr: bool = Field(
        False, description="Read text in every sampled frame (slow); uploads always read text."
    )

    @property
    def kind(self) -> Literal["none", "http", "v4l2", "rtsp"]:
        """What sort of source ``source`` names."""
        if not self.source:
            return "none"
        if self.source.startswith(("http://", "https://")):
            return "http"
        if self.source.startswith(("rtsp://", "rtsps://")):
            return "rtsp"
        return "v4l2"

    @model_validator(mode="after")
    def _check(self) -> CameraConfig:
        if self.kind == "v4l2" and not self.source.startswith("/dev/"):
            raise ValueError(
                f"source {self.source!r} is neither an http(s):// or rtsp:// URL nor a "
                "/dev/video* device"
            )
        if self.retry_max_s < self.retry_min_s:
            raise ValueError("retry_max_s must be at least retry_min_s")
        return self


class DetectConfig(ConfigSection):
    """The embedded default describer (OpenCV and RapidOCR, offline on any CPU)."""

    detect_width: int = Field(
        320,
        ge=160,
        le=1920,
        description="Faces and people are looked for on a copy this wide (or the image's "
        "own width if smaller); text is read at full size. Narrower is faster; faces "
        "under 32 pixels of this copy (vision.detect.MIN_FACE) are not looked for.",
    )
    person_threshold: float = Field(
        1.0,
        description="HOG people detector score a person must reach (OpenCV's SVM margin).",
    )
    ocr_min_confidence: float = Field(
        0.6, ge=0.0, le=1.0, description="Text read below this is dropped."
    )
    motion_threshold: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Fraction of the frame that must change between two frames to count as motion.",
    )


class VLMConfig(ConfigSection):
    """An optional vision-language model: llama-server with --mmproj, or any OpenAI-compatible chat.

    ``url`` fixes it; otherwise, with ``consul_addr`` set, a healthy instance of
    ``consul_service`` carrying ``consul_tag`` is used. Neither: the default
    describer answers alone.
    """

    url: str = Field("", description="OpenAI-compatible base URL ending in /v1; empty: none.")
    model: str = Field("vision", description="Model name sent in the request.")
    api_key: SecretStr = Field(SecretStr(""), description="Bearer key of the endpoint, if any.")
    timeout_s: float = Field(20.0, gt=0.0, description="Seconds before falling back.")
    max_tokens: int = Field(96, ge=8, description="Longest answer.")
    consul_addr: str = Field("", description="Consul agent to find the VLM in; empty: don't.")
    consul_token: SecretStr = Field(SecretStr(""), description="Consul ACL token.")
    consul_ca_file: Path | None = Field(
        None,
        description="PEM CA that signed an https consul_addr's certificate (none: system CAs).",
    )
    consul_service: str = Field("llm-expert", description="Consul service of the experts.")
    consul_tag: str = Field("vision", description="Tag that marks an expert that can see.")
    consul_refresh_s: float = Field(15.0, gt=0.0, description="Seconds between Consul looks.")


class LogConfig(ConfigSection):
    """Logs on stderr."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class VisionConfig(ConfigSection):
    """The whole configuration file."""

    server: ServerConfig = ServerConfig()
    camera: CameraConfig = CameraConfig()
    detect: DetectConfig = DetectConfig()
    vlm: VLMConfig = VLMConfig()
    log: LogConfig = LogConfig()


def load_config(path: Path | str | None, environ: Mapping[str, str] | None = None) -> VisionConfig:
    """Load ``path`` (None: defaults only), apply the environment's overrides, validate."""
    path = Path(path) if path is not None else None
    config = load_toml_config(
        VisionConfig,
        path,
        env_prefix=ENV_PREFIX,
        environ=environ,
        verbatim=VERBATIM_KEYS,
        paths=PATHS,
        empty_is_none=PATHS,
    )
    check_tls_files(config.server, path if path is not None else "the defaults")
    return config
