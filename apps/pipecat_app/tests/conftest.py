"""Fixtures of the app's tests.

Helpers: app_helpers.py here; llama-server, spoken questions and the audio
transport in tests/helpers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.llama_server import LlamaServer
from helpers.llm_skip import smollm2_server_or_skip

from app_helpers import App, app_environ, start_app


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
    """A real llama-server with SmolLM2-135M, the demo's expert (skips without one).

    With ``--metrics``: tests check its ``tokens_predicted`` count went up.
    """
    server = smollm2_server_or_skip(jinja=False, extra_args=["--metrics"])
    yield server
    server.kill()
