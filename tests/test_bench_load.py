"""``benchmarks/bench_load.py``: its bounds, its 127.0.0.1-only guard, its figures and verdicts.

The clients run against an in-memory HTTP transport (``httpx.MockTransport``):
what is checked here is how many requests go out, where to and when they
stop, not the app (``test_benchmarks.py`` runs the benchmark against the real
app and llama-server).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_load  # noqa: E402
from bench_load import Budget, Level, TurnResult  # noqa: E402

URL = "http://127.0.0.1:7860"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:7860", "http://127.0.0.1:7860/", "https://127.0.0.1/"],
)
def test_local_url_takes_127_0_0_1(url: str) -> None:
    assert bench_load.local_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:7860",
        "http://0.0.0.0:7860",
        "http://10.0.0.5:7860",
        "http://127.0.0.1.example.com:7860",
        "http://user@example.com:7860",
        "http://[::1]:7860",
        "ftp://127.0.0.1/",
        "127.0.0.1:7860",
    ],
)
def test_local_url_refuses_any_other_host(url: str) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only"):
        bench_load.local_url(url)


class FakeApp:
    """``/api/chat`` in memory: answers each turn, after ``delay`` seconds, in its conversation."""

    def __init__(self, delay: float = 0.0, status: int = 200, routing: bool = True) -> None:
        self.delay = delay
        self.status = status
        self.routing = routing
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append({"url": str(request.url), **body})
        await asyncio.sleep(self.delay)
        if self.status != 200:
            return httpx.Response(self.status, json={"detail": "busy"})
        session = body.get("session_id") or f"s{len(self.requests)}"
        answer: dict[str, Any] = {"session_id": session, "text": "Paris."}
        if self.routing:
            answer["routing"] = {"expert": "general"}
        return httpx.Response(200, json=answer)


async def _clients(app: FakeApp, clients: int, budget: Budget, url: str = URL) -> Level:
    level = Level(clients)
    conversations: dict[int, str] = {}
    async with httpx.AsyncClient(transport=httpx.MockTransport(app)) as http:
        await asyncio.gather(
            *(
                bench_load.client_loop(http, url, c, budget, conversations, level)
                for c in range(clients)
            )
        )
    return level


def test_the_clients_stop_at_the_turn_budget() -> None:
    app = FakeApp()
    level = asyncio.run(_clients(app, 3, Budget(7, time.monotonic() + 60)))
    assert len(app.requests) == 7
    assert len(level.results) == 7
    assert all(r.error is None for r in level.results)
    assert {r["url"] for r in app.requests} == {f"{URL}/api/chat"}


def test_the_clients_stop_at_the_time_budget() -> None:
    app = FakeApp(delay=0.05)
    started = time.monotonic()
    level = asyncio.run(_clients(app, 2, Budget(10**6, started + 0.3)))
    elapsed = time.monotonic() - started
    # No turn starts after 0.3 s; the two under way then end (0.05 s each).
    assert elapsed < 0.3 + 0.05 + 0.2
    assert 2 <= len(level.results) <= 2 * (0.3 / 0.05 + 1)


def test_a_client_keeps_its_conversation() -> None:
    app = FakeApp()
    asyncio.run(_clients(app, 2, Budget(6, time.monotonic() + 60)))
    by_session: dict[str, int] = {}
    for request in app.requests:
        if "session_id" in request:
            by_session[request["session_id"]] = by_session.get(request["session_id"], 0) + 1
    # Each client's first turn opens a conversation; its next ones continue it.
    assert sum(1 for r in app.requests if "session_id" not in r) == 2
    assert sorted(by_session.values()) == [2, 2]


def test_the_clients_refuse_any_host_but_127_0_0_1() -> None:
    app = FakeApp()
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only"):
        asyncio.run(_clients(app, 1, Budget(5, time.monotonic() + 60), "http://10.1.2.3:7860"))
    assert app.requests == []


def test_refusals_and_apologies_are_errors() -> None:
    busy = FakeApp(status=503)
    level = asyncio.run(_clients(busy, 1, Budget(2, time.monotonic() + 60)))
    assert [r.error for r in level.results] == ["HTTP 503", "HTTP 503"]
    # A 200 without a routing label: no expert answered (the app's apology).
    sorry = FakeApp(routing=False)
    level = asyncio.run(_clients(sorry, 1, Budget(2, time.monotonic() + 60)))
    assert [r.error for r in level.results] == ["no expert answered"] * 2
    assert "session_id" in sorry.requests[1]


def test_percentiles() -> None:
    assert bench_load.percentiles([]) == {"n": 0, "p50": None, "p95": None}
    stats = bench_load.percentiles([float(v) for v in range(1, 101)])
    assert stats == {"n": 100, "p50": 50.5, "p95": pytest.approx(95.05)}


def test_summarize_counts_answered_turns_per_second_and_errors() -> None:
    level = Level(4, rss_mb=[500.0, 520.0], deferred=[0.0, 2.0])
    level.results = [TurnResult(0, 1.0), TurnResult(1, 2.0), TurnResult(2, 3.0, "HTTP 503")]
    costs = {
        "elapsed_s": 4.0,
        "app_cpu_s": 2.0,
        "llama_cpu_s": 6.0,
        "llama_busy_s": 3.8,
        "llama_tokens": 400.0,
        "llama_prompt_tokens": 900.0,
        "rss_end_mb": 510.0,
    }
    summary = bench_load.summarize(level, costs, [0.1, 0.3])
    assert summary["turns_per_s"] == 0.5  # two answered in 4 s
    assert (summary["turns"], summary["answered"], summary["errors"]) == (3, 2, 1)
    assert summary["errors_by_kind"] == {"HTTP 503": 1}
    assert summary["answer_s"]["p50"] == 1.5
    assert summary["ttft_s"]["p50"] == 0.2
    assert summary["app_rss_mb"] == {"max": 520.0, "end": 510.0}
    assert (summary["app_cpu_cores"], summary["llama_cpu_cores"]) == (0.5, 1.5)
    assert summary["llama_busy"] == 0.95
    assert summary["llama_deferred"] == {"mean": 1.0, "max": 2.0}
    assert summary["llama_prompt_tokens_per_turn"] == 300.0  # over the three turns
    # With four slots, 3.8 s of slot time in 4 s is a quarter of what they could give.
    assert bench_load.summarize(level, costs, [0.1, 0.3], slots=4)["llama_busy"] == 0.237


def _level(busy: float, app: float, llama: float, per_s: float = 1.0, clients: int = 1) -> dict:
    return {
        "clients": clients,
        "turns_per_s": per_s,
        "llama_busy": busy,
        "app_cpu_cores": app,
        "llama_cpu_cores": llama,
    }


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (_level(busy=0.95, app=0.3, llama=1.9), "llama-server"),
        (_level(busy=0.5, app=0.9, llama=0.8), "the app"),
        (_level(busy=0.6, app=0.7, llama=1.1), "the CPU"),
        (_level(busy=0.3, app=0.2, llama=0.5), "nothing"),
    ],
)
def test_limit_names_what_held_the_level(level: dict, expected: str) -> None:
    assert bench_load.limit(level, cores=2) == expected


def test_saturation_is_the_first_level_that_did_not_grow_enough() -> None:
    grows = [_level(0, 0, 0, 1.0, 1), _level(0, 0, 0, 3.0, 4), _level(0, 0, 0, 9.0, 16)]
    assert bench_load.saturation(grows) is None
    flat = [_level(0, 0, 0, 1.0, 1), _level(0, 0, 0, 1.1, 4), _level(0, 0, 0, 1.0, 16)]
    assert bench_load.saturation(flat) == 4
    late = [_level(0, 0, 0, 1.0, 1), _level(0, 0, 0, 2.0, 4), _level(0, 0, 0, 2.1, 16)]
    assert bench_load.saturation(late) == 16


def test_llama_metrics_reads_unlabelled_samples() -> None:
    text = (
        "# HELP llamacpp:prompt_seconds_total Prompt process time\n"
        "llamacpp:prompt_seconds_total 1.5\n"
        "llamacpp:tokens_predicted_seconds_total 2.25\n"
        "llamacpp:requests_deferred 3\n"
    )
    metrics = bench_load.llama_metrics(text)
    assert metrics == {
        "prompt_seconds_total": 1.5,
        "tokens_predicted_seconds_total": 2.25,
        "requests_deferred": 3.0,
    }
    assert bench_load._busy_s(metrics) == 3.75


def test_the_benchmark_runs_llama_server_with_the_demo_s_slots() -> None:
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    assert f"\nLLAMA_SLOTS={bench_load.DEMO_SLOTS}\n" in demo
    assert '-c $((2048 * LLAMA_SLOTS)) -np "${LLAMA_SLOTS}"' in demo
    assert bench_load.SLOT_CONTEXT == 2048
