"""Test helpers: the app as a real subprocess, expert overrides, checks that the model answered.

llama-server and its ``tokens_predicted`` count, spoken questions (``helpers.speech``) and
the transport that plays them into a pipeline (``helpers.audio_transport``) are in tests/helpers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from helpers.ports import free_port
from loguru import logger

from pipecat_app.config import DEMO_CONFIG
from pipecat_app.twin.config import RoutingConfig
from pipecat_app.twin.discovery import Expert
from pipecat_app.twin.router import RouteDecision, Router
from pipecat_app.twin.service import NO_EXPERT_REPLY

if TYPE_CHECKING:
    from helpers.audio_transport import AudioFileTransport

    from chromium_cdp import Chromium
    from pipecat_app.session import VoiceSession

__all__ = [
    "EXPERT",
    "App",
    "app_environ",
    "assert_the_model_answered",
    "assert_the_spoken_answer_came_from_the_model",
    "expected_decision",
    "expert_environ",
    "free_port",
    "hear_the_spoken_answer",
    "logged_turns",
    "question_wav",
    "start_app",
    "turn_log",
    "voice_session",
    "wait_http",
]

#: The one expert's name in ``expert_environ`` (and in ``make demo``).
EXPERT = "general"


@asynccontextmanager
async def voice_session(
    config: Any, **session_args: Any
) -> AsyncIterator[tuple[VoiceSession, AudioFileTransport]]:
    """A running voice pipeline fed from audio in memory; stopped on the way out."""
    # Imported here: the speech stack is heavy, and most tests using these
    # helpers never start a voice pipeline.
    from helpers.audio_transport import AudioFileTransport

    from pipecat_app.session import VoiceSession

    transport = AudioFileTransport()
    session = VoiceSession(config, transport, **session_args)
    run = asyncio.create_task(session.run())
    try:
        await asyncio.wait_for(transport.wait_started(), 60)
        yield session, transport
    finally:
        await session.stop()
        await asyncio.wait_for(run, 30)


def wait_http(
    url: str, timeout: float, proc: subprocess.Popen | None = None, verify: Path | bool = True
) -> httpx.Response:
    """Wait for a 200 from ``url``; ``verify``: the CA file of an https URL's certificate."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            response = httpx.get(url, timeout=2, verify=_ssl_context(verify))
            if response.status_code == 200:
                return response
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s ({last})")


def _ssl_context(verify: Path | bool) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=verify) if isinstance(verify, Path) else verify


class App:
    """``twin-app serve`` in a subprocess, its stderr in a file; ``url`` has no trailing slash."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
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
        f'{{name = "{EXPERT}", domain = "general", description = "Everyday conversation", '
        f'base_url = "{base_url}", model = "smollm2-135m", tool_calls = false}}'
    )
    return {"TWIN_APP__TWIN__EXPERTS": f"[{expert}]"}


def expected_decision(transcript: str, expert_url: str) -> RouteDecision:
    """The app's router's decision on ``transcript`` with ``expert_environ``'s one expert.

    One domain alone: every turn is like its examples, with probability 1.
    """
    expert = Expert(EXPERT, "general", "Everyday conversation", expert_url)
    decision = Router(RoutingConfig()).route(transcript, [expert])
    assert decision.reason == "similarity", decision
    return decision


def app_environ(state_dir: Path, expert_url: str | None = None) -> dict[str, str]:
    """Environment for one app instance: its own port, memory file and JSON logs."""
    env = dict(os.environ)
    if expert_url:
        env.update(expert_environ(expert_url))
    env["TWIN_APP__SERVER__PORT"] = str(free_port())
    env["TWIN_APP__TWIN__MEMORY__PATH"] = str(state_dir / "memory.sqlite3")
    env["TWIN_APP__LOG__JSON_LINES"] = "true"
    return env


def start_app(
    env: dict[str, str], log: Path, config: Path = DEMO_CONFIG, ca: Path | None = None
) -> App:
    """Start the app with ``env``; its URL follows the host and TLS overrides in ``env``.

    ``ca``: the CA file that signed ``TWIN_APP__SERVER__TLS_CERT_FILE``, trusted
    while waiting for ``/health``.
    """
    scheme = "https" if env.get("TWIN_APP__SERVER__TLS_CERT_FILE") else "http"
    host = env.get("TWIN_APP__SERVER__HOST", "127.0.0.1")
    url = f"{scheme}://{host}:{env['TWIN_APP__SERVER__PORT']}"
    handle = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipecat_app.cli", "serve", "--config", str(config)],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    app = App(proc, url, log)
    try:
        wait_http(f"{app.url}/health", 60, proc, verify=ca or True)
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


def assert_the_model_answered(
    answer: str,
    generated: float,
    turns: Callable[[], list[dict[str, Any]]] | None,
    *,
    expert: str = EXPERT,
    wait_s: float = 10.0,
) -> dict[str, Any]:
    """Fail unless ``answer`` came from the expert's model; return its turn record.

    TwinService answers every turn, with its fallback reply (``NO_EXPERT_REPLY``)
    when no expert could, so a non-empty answer proves nothing. Checked, and
    every failure reported at once:

    - the answer is not empty and does not contain the fallback reply;
    - ``generated``, the rise of llama-server's ``tokens_predicted`` count over
      the turn (``helpers.llama_server.tokens_predicted`` after minus before),
      is above zero;
    - the app's turn log (``turns`` returns its records; polled for up to
      ``wait_s``, as the log line may follow the answer by a moment) has a
      turn with this answer, given by ``expert``. ``turns`` is None only where
      the app keeps no turn log (``twin-app chat`` logs warnings only).
    """
    problems = []
    if not answer.strip():
        problems.append("the answer is empty")
    if NO_EXPERT_REPLY in answer:
        problems.append(f"the answer is the fallback reply (no expert answered): {answer!r}")
    if generated <= 0:
        problems.append(f"llama-server generated no tokens during the turn ({generated})")
    logged: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait_s
    while turns is not None and not (logged := [t for t in turns() if t.get("answer") == answer]):
        if time.monotonic() > deadline:
            problems.append(f"no turn log record has this answer {answer!r}; turns: {turns()}")
            break
        time.sleep(0.2)
    record = logged[-1] if logged else {}
    if logged and record.get("expert") != expert:
        problems.append(f"the turn log names expert {record.get('expert')!r}, not {expert!r}")
    assert not problems, "the model did not answer: " + "; ".join(problems)
    return record


def question_wav(path: Path, question: str = "What is the capital of France?") -> Path:
    """12 s for a fake microphone to play in a loop: ``question``, then silence.

    The silence leaves room for the answer before the question comes again.
    """
    from helpers.speech import silence, synthesize, write_wav

    from pipecat_app.config import PiperTTSConfig

    spoken = synthesize(question, PiperTTSConfig(provider="piper"))
    return write_wav(path, silence(1.0) + spoken + silence(11.0 - len(spoken) / 32000))


def _heard_the_question(app: App) -> bool:
    """A turn transcribed the question ("What is the capital of France?").

    Chromium's fake microphone plays the WAV file in a loop from the moment the
    page opens it, so the first turn may begin mid-question (the connection
    comes up a little later); the next loop brings the whole question.
    """
    return any("capital" in t.get("transcript", "").lower() for t in app.turns())


def hear_the_spoken_answer(chromium: Chromium, app: App, timeout: float = 150) -> dict[str, Any]:
    """Wait until the app heard the question and the page received its spoken answer.

    Returns the page's WebRTC audio stats. Fails with what both ends saw, and
    at once when the page asks for anything outside the app.
    """
    deadline = time.monotonic() + timeout
    heard: dict[str, Any] = {}
    while time.monotonic() < deadline:
        heard = chromium.inbound_audio()
        if outside := chromium.requests_outside(app.url):
            raise AssertionError(
                f"the page asked for something outside the app: {outside}"
                f"\nfailed: {chromium.failed}\npage: {chromium.console[-5:]}"
            )
        if heard["energy"] > 0 and _heard_the_question(app):
            return heard
        time.sleep(1)
    shown = chromium.evaluate("document.body ? document.body.innerText : ''") or ""
    raise AssertionError(
        f"no spoken answer to the question: {heard}; turns: {app.turns()}"
        f"\npage console: {chromium.console[-5:]}\npage shows: {shown[-500:]!r}"
        f"\napp log tail:\n{app.logs()[-3000:]}"
    )


def assert_the_spoken_answer_came_from_the_model(
    app: App, heard: dict[str, Any], generated: float
) -> None:
    """The page's one peer connection connected, and the model answered the question.

    ``generated``: the rise of llama-server's ``tokens_predicted`` over the talk.
    """
    assert heard["states"] == ["connected"]
    turns = app.turns()
    assert turns, "the app logged no answered turn"
    question = [t for t in turns if "capital" in t.get("transcript", "").lower()]
    assert question, turns
    assert_the_model_answered(question[-1]["answer"], generated, app.turns)
    # A turn cut off before its first audio (the looping file's next question)
    # is logged without the time to it.
    assert all(t["total_s"] > 0 for t in turns if not t["interrupted"]), turns
