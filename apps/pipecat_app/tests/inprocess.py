"""The app in the test's own process (FastAPI's ``TestClient``), configured per test.

``config_for`` gives the demo configuration with its own memory file and any
``section.key`` settings; its expert is, unless a test names one, a local port
nobody listens on, so every turn ends at once with TwinService's fallback
reply (for tests of sessions and limits, not of answers). ``stalled_expert``
is an expert that takes requests and never answers: a turn lasts until
``twin.routing.expert_timeout_s``. ``sample`` reads one value of the app's
Prometheus registry.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers.ports import free_port

from app_helpers import expert_environ
from pipecat_app.config import DEMO_CONFIG, AppConfig, load_config
from pipecat_app.metrics import REGISTRY


def config_for(tmp_path: Path, *, expert_url: str | None = None, **settings: object) -> AppConfig:
    """The demo config for one test; ``settings`` are ``section__key=value`` overrides."""
    environ = {
        **expert_environ(expert_url or f"http://127.0.0.1:{free_port()}/v1"),
        "TWIN_APP__TWIN__MEMORY__PATH": str(tmp_path / "memory.sqlite3"),
    }
    environ.update({f"TWIN_APP__{key.upper()}": str(value) for key, value in settings.items()})
    return load_config(DEMO_CONFIG, environ=environ)


@contextmanager
def stalled_expert() -> Iterator[str]:
    """An expert's base URL whose server takes connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)  # the kernel completes the handshakes; nobody ever reads
        yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"


def sample(name: str, **labels: str) -> float:
    """The current value of one sample in the app's registry (0 when it has none yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
