"""Fixtures of the app's tests (helpers are in app_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app_helpers import App, app_environ, start_app

# The real llama-server helpers are TwinService's tests' (imported, not copied).
from twin.conftest import LlamaServer, llama_server_bin, smollm2_gguf, start_llama_server


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[App]:
    """One app for a module's read-only checks."""
    state = tmp_path_factory.mktemp("app")
    running = start_app(app_environ(state), state / "app.log")
    yield running
    running.stop()


@pytest.fixture
def own_app(tmp_path) -> Iterator[App]:
    """An app for a test that stops or changes it."""
    running = start_app(app_environ(tmp_path), tmp_path / "app.log")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def llama() -> Iterator[LlamaServer]:
    """A real llama-server with SmolLM2-135M, the demo's expert (skips without one)."""
    server = start_llama_server(llama_server_bin(), smollm2_gguf(), jinja=False)
    yield server
    server.kill()
