"""Test helpers: the app as a real subprocess, expert overrides, its turn log.

llama-server is in tests/helpers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from helpers.ports import free_port
from loguru import logger

from pipecat_app.config import DEMO_CONFIG

if TYPE_CHECKING:
    from pipecat_app.session import VoiceSession
    from pipecat_app.transports.audio_file import AudioFileTransport

__all__ = [
    "App",
    "app_environ",
    "expert_environ",
    "free_port",
    "logged_turns",
    "start_app",
    "turn_log",
    "voice_session",
    "wait_http",
]


@asynccontextmanager
async def voice_session(
    config: Any, **session_args: Any
) -> AsyncIterator[tuple[VoiceSession, AudioFileTransport]]:
    """A running voice pipeline fed from audio in memory; stopped on the way out."""
    # Imported here: the speech stack is heavy, and most tests using these
    # helpers never start a voice pipeline.
    from pipecat_app.session import VoiceSession
    from pipecat_app.transports.audio_file import AudioFileTransport

    transport = AudioFileTransport()
    session = VoiceSession(config, transport, **session_args)
    run = asyncio.create_task(session.run())
    try:
        await asyncio.wait_for(transport.wait_started(), 60)
        yield session, transport
    finally:
        await session.stop()
        await asyncio.wait_for(run, 30)


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s ({last})")


class App:
    """``twin-app serve`` in a subprocess, its stderr in a file."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def turns(self) -> list[dict[str, Any]]:
        """The turns the app has logged so far (its log is JSON lines: ``app_environ``)."""
        return logged_turns(self.logs())

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def expert_environ(base_url: str) -> dict[str, str]:
    """Config overrides that make the demo's one general expert ``base_url``."""
    expert = (
        '{name = "general", domain = "general", description = "Everyday conversation", '
        f'base_url = "{base_url}", model = "smollm2-135m", tool_calls = false}}'
    )
    return {"TWIN_APP__TWIN__EXPERTS": f"[{expert}]"}


def app_environ(state_dir: Path, expert_url: str | None = None) -> dict[str, str]:
    """Environment for one app instance: its own port, memory file and JSON logs."""
    env = dict(os.environ)
    if expert_url:
        env.update(expert_environ(expert_url))
    env["TWIN_APP__SERVER__PORT"] = str(free_port())
    env["TWIN_APP__TWIN__MEMORY__PATH"] = str(state_dir / "memory.sqlite3")
    env["TWIN_APP__LOG__JSON_LINES"] = "true"
    return env


def start_app(env: dict[str, str], log: Path, config: Path = DEMO_CONFIG) -> App:
    handle = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipecat_app.cli", "serve", "--config", str(config)],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    app = App(proc, int(env["TWIN_APP__SERVER__PORT"]), log)
    try:
        wait_http(f"{app.url}/health", 60, proc)
    except Exception:
        app.stop()
        raise RuntimeError(f"app did not come up:\n{app.logs()[-3000:]}") from None
    return app


def logged_turns(log_text: str) -> list[dict[str, Any]]:
    """Each turn record (``event: turn``) in a JSON-lines app log, oldest first.

    A record is its fields (``extra``) and its text under ``message``.
    """
    records = (json.loads(line)["record"] for line in log_text.splitlines() if line[:1] == "{")
    return [
        {**r["extra"], "message": r["message"]}
        for r in records
        if r["extra"].get("event") == "turn"
    ]


@contextmanager
def turn_log() -> Iterator[list[dict[str, Any]]]:
    """Each turn record this process logs while the block runs, as ``logged_turns`` gives them."""
    records: list[dict[str, Any]] = []
    sink = logger.add(
        lambda m: records.append({**m.record["extra"], "message": m.record["message"]}),
        level="INFO",
        filter=lambda record: record["extra"].get("event") == "turn",
    )
    try:
        yield records
    finally:
        logger.remove(sink)
