"""The service's configuration: one typed model loaded once from one TOML file.

``load_config(path)`` reads the TOML file (or none: every key has a default),
applies environment overrides and validates the result; every error names the
key and where it came from. Overrides: ``TWIN_VISION__<SECTION>__<KEY>=value``
sets ``<section>.<key>``, read as a TOML value when it parses as one
(``TWIN_VISION__SERVER__PORT=9000``), else as a plain string. The access
token's override is always a string, as written.

``[server]`` protects the service the way the assistant's own ``[server]``
does, with the same keys: ``tls_cert_file`` and ``tls_key_file`` (HTTPS, both
or neither) and ``access_token`` (``Authorization: Bearer``; ``/health``
stays open).
"""

from __future__ import annotations

import os
import ssl
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

ENV_PREFIX = "TWIN_VISION__"
#: Keys whose environment override is a string as written (secrets are never numbers).
VERBATIM_KEYS = frozenset({("server", "access_token")})
MetricsAccess = Literal["local", "open", "token"]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and its source."""


class Section(BaseModel):
    """A table of the config file: an unknown key in it is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class ServerConfig(Section):
    """Where the HTTP service listens, what it takes in, and who may use it."""

    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 for every interface.")
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
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain) to serve HTTPS with; set both or neither."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    access_token: SecretStr = Field(
        SecretStr(""),
        description="Token every client must show (Authorization: Bearer) except on "
        "/health; empty = anyone who can reach host:port sees the camera.",
    )
    metrics_access: MetricsAccess = Field(
        "local",
        description="Who may read /metrics: 'local' (loopback clients), 'open' or 'token'.",
    )

    @property
    def tls(self) -> bool:
        """Whether the service speaks HTTPS."""
        return self.tls_cert_file is not None

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given, missing = (
                ("tls_cert_file", "tls_key_file")
                if self.tls_key_file is None
                else ("tls_key_file", "tls_cert_file")
            )
            raise ValueError(f"{given} is set but {missing} is not: set both for HTTPS, or neither")
        return self


class CameraConfig(Section):
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


class DetectConfig(Section):
    """The embedded default describer (OpenCV and RapidOCR, offline on any CPU)."""

    detect_width: int = Field(
        384,
        ge=160,
        le=1920,
        description="Faces and people are looked for on a copy this wide (or the image's "
        "own width if smaller); text is read at full size. Narrower is faster; at 320 the "
        "profile face in scikit-image's camera photo (as JPEG) is missed.",
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


class VLMConfig(Section):
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
    consul_service: str = Field("llm-expert", description="Consul service of the experts.")
    consul_tag: str = Field("vision", description="Tag that marks an expert that can see.")
    consul_refresh_s: float = Field(15.0, gt=0.0, description="Seconds between Consul looks.")


class LogConfig(Section):
    """Logs on stderr."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class VisionConfig(Section):
    """The whole configuration file."""

    server: ServerConfig = ServerConfig()
    camera: CameraConfig = CameraConfig()
    detect: DetectConfig = DetectConfig()
    vlm: VLMConfig = VLMConfig()
    log: LogConfig = LogConfig()


def _env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, Any]]:
    overrides: dict[tuple[str, ...], tuple[str, Any]] = {}
    for name, raw in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        key = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part)
        if not key:
            continue
        if key in VERBATIM_KEYS:
            value: Any = raw
            try:
                quoted = tomllib.loads(f"v = {raw}")["v"]
                value = quoted if isinstance(quoted, str) else raw
            except tomllib.TOMLDecodeError:
                pass
        else:
            try:
                value = tomllib.loads(f"v = {raw}")["v"]
            except tomllib.TOMLDecodeError:
                value = raw
        overrides[key] = (name, value)
    return overrides


def _apply(data: dict[str, Any], key: tuple[str, ...], value: Any, source: str) -> None:
    node = data
    for part in key[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(key)} goes inside {part}, which is not a table")
        node = child
    node[key[-1]] = value


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    server = data.get("server")
    if not isinstance(server, dict):
        return
    for key in ("tls_cert_file", "tls_key_file"):
        value = server.get(key)
        if value == "":
            server[key] = None
        elif isinstance(value, str):
            server[key] = str((base / Path(value).expanduser()).resolve())


def load_config(path: Path | str | None, environ: Mapping[str, str] | None = None) -> VisionConfig:
    """Load ``path`` (None: defaults only), apply the environment's overrides, validate."""
    environ = os.environ if environ is None else environ
    where = str(path) if path is not None else "the defaults"
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    overrides = _env_overrides(environ)
    for key, (name, value) in overrides.items():
        _apply(data, key, value, f"environment variable {name}")
    _resolve_paths(data, Path(path).resolve().parent if path is not None else Path.cwd())
    try:
        config = VisionConfig.model_validate(data)
    except ValidationError as exc:
        by_env = {".".join(k): name for k, (name, _) in overrides.items()}
        lines = []
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"])
            source = next((n for k, n in by_env.items() if key.startswith(k)), None)
            lines.append(f"  {key}: {error['msg']}" + (f" (set by {source})" if source else ""))
        raise ConfigError(f"invalid configuration in {where}:\n" + "\n".join(lines)) from exc
    _check_tls(config.server, where)
    return config


def _check_tls(server: ServerConfig, where: str) -> None:
    """The certificate and key can be read and belong together (else uvicorn fails later)."""
    if server.tls_cert_file is None or server.tls_key_file is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            server.tls_cert_file, server.tls_key_file
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"invalid configuration in {where}:\n  server.tls_cert_file / tls_key_file: "
            f"cannot load {server.tls_cert_file} with {server.tls_key_file}: {exc}"
        ) from exc
