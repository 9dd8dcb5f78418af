"""Publishing: check-and-set to a file and to Consul KV, the next turn of a running TwinService,
and a dead endpoint that stops the run instead of scoring 0."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from helpers.ports import free_port
from pipecat_app.config import DEMO_CONFIG, load_config
from pipecat_app.session import TextSession
from pipecat_app.twin.config import TwinConfig

from prompt_engineering import evaluator
from prompt_engineering.publish import ConsulTarget, FileTarget
from prompt_engineering.runner import Endpoint, EndpointDown
from prompt_engineering.scoring import score_prompt
from prompt_engineering.settings import ENV, RunSettings
from prompt_engineering.suite import load_cases
from prompt_kv_fixture import consul_kv

KEY = "twin/prompts/system"
NEW = "You are Twin, evolved. Answer in one short sentence."


def test_file_target_publishes_with_metadata_and_refuses_a_stale_writer(tmp_path):
    target = FileTarget(tmp_path / "system.md")
    first, second = target.current(), target.current()  # two runs read the same state
    assert first.text is None
    assert first.version == 0
    assert target.publish(NEW, {"version": 1, "held_out_score": 0.8}, first)
    assert not target.publish("You are Twin, from the other run.", {"version": 1}, second)
    assert (tmp_path / "system.md").read_text().strip() == NEW
    meta = json.loads((tmp_path / "system.md.meta.json").read_text())
    assert meta["held_out_score"] == 0.8
    now = target.current()
    assert (now.text, now.version) == (NEW, 1)


def test_consul_target_uses_cas_and_keeps_metadata_in_a_sibling_key():
    with consul_kv() as kv:
        target = ConsulTarget(KEY, kv.url)
        first, second = target.current(), target.current()
        assert first.text is None
        assert first.token == "0"
        assert target.publish(NEW, {"version": 1, "held_out_score": 0.7}, first)
        assert not target.publish("You are Twin, from the other run.", {"version": 1}, second)
        assert kv.value(KEY) == NEW
        assert json.loads(kv.value(f"{KEY}.meta"))["held_out_score"] == 0.7
        assert (KEY, "0") in kv.puts  # the prompt itself only ever with ?cas
        assert all(cas is not None for key, cas in kv.puts if key == KEY)
        later = target.current()
        assert later.version == 1
        assert later.token != "0"
        assert target.publish("You are Twin, version two of it.", {"version": 2}, later)


@contextmanager
def recording_expert() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An OpenAI-compatible endpoint that says "Hello." and keeps each request's messages."""
    requests: list[dict[str, Any]] = []
    chunk = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello."}}]}
    done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    body = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # /v1/models: the endpoint is up
            models = b'{"data": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(models)))
            self.end_headers()
            self.wfile.write(models)

        def do_POST(self) -> None:
            requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.anyio
async def test_a_published_prompt_reaches_a_running_twinservice_on_its_next_turn(tmp_path):
    with consul_kv() as kv, recording_expert() as (url, requests):
        twin = TwinConfig.model_validate(
            {
                "user_id": "ana",
                "memory": {"path": str(tmp_path / "memory.sqlite3")},
                "prompt": {"file": "", "text": "You are Twin, the default.", "consul_key": KEY},
                "discovery": {"consul_addr": kv.url, "wait": "5s", "retry_s": 0.2},
                "experts": [
                    {"name": "a", "domain": "general", "description": "d", "base_url": url}
                ],
                "tools": {"enabled": False},
            }
        )
        app = load_config(DEMO_CONFIG).model_copy(update={"twin": twin})
        session = TextSession(app)
        await session.start()
        try:
            assert await session.answer("Hi.") == "Hello."
            assert requests[-1]["messages"][0]["content"] == "You are Twin, the default."
            target = ConsulTarget(KEY, kv.url)
            assert target.publish(NEW, {"version": 1}, target.current())
            for _ in range(100):  # the watch's blocking query returns on the write
                if session.twin.system_prompt == NEW:
                    break
                await asyncio.sleep(0.05)
            assert await session.answer("And now?") == "Hello."
            assert requests[-1]["messages"][0]["content"] == NEW
        finally:
            await session.close()


def test_a_dead_endpoint_stops_the_evaluation_instead_of_scoring_zero(tmp_path, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings = RunSettings(
        run_dir=tmp_path, assistant_urls=[dead], mutator_url=dead, train_limit=2, stage1_cases=1
    )
    monkeypatch.setenv(ENV, str(settings.save()))
    prompt = tmp_path / "prompt.md"
    prompt.write_text("You are Twin, a friendly voice assistant. Answer in one short sentence.")
    with pytest.raises(EndpointDown, match="does not answer"):
        evaluator.evaluate(str(prompt))
    assert "does not answer" in settings.fatal_path.read_text()
    assert not settings.progress_path.exists()  # nothing was scored


def test_prompt_evolve_with_a_dead_endpoint_says_so_and_writes_no_report(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "prompt_engineering.cli",
            "--run-dir",
            str(tmp_path),
            "--assistant-url",
            dead,
            "--iterations",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"the model endpoint {dead} does not answer" in run.stdout
    assert not (tmp_path / "report.json").exists()


def test_a_rejected_candidate_scores_zero_with_its_reason_and_runs_no_case(tmp_path, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}/v1"  # never reached: nothing runs
    settings = RunSettings(run_dir=tmp_path, assistant_urls=[dead], mutator_url=dead)
    monkeypatch.setenv(ENV, str(settings.save()))
    prompt = tmp_path / "prompt.md"
    prompt.write_text("Okay, let me think about how to make the prompt better for the user.")
    result = evaluator.evaluate_stage1(str(prompt))
    assert result.metrics["combined_score"] == 0.0
    assert "thinking" in result.artifacts["rejected"]
    assert not settings.fatal_path.exists()


@pytest.mark.anyio
async def test_cases_go_to_several_experts_in_turn():
    cases = [c for c in load_cases() if not c.tools][:4]  # plain answers: "Hello." will do
    with recording_expert() as (first, seen_first), recording_expert() as (second, seen_second):
        result = await score_prompt(
            "You are Twin, a friendly voice assistant. Answer in one short sentence.",
            cases,
            [Endpoint(first), Endpoint(second)],
            concurrency=2,
        )
    assert len(result.cases) == 4
    assert len(seen_first) >= 2
    assert len(seen_second) >= 2
