"""Load: concurrent text conversations on ``/api/chat``; where it saturates, and why.

    python benchmarks/bench_load.py --out DIR [--clients 1 4 16] [--seconds 30]
        [--max-turns 400] [--slots N]

Starts llama-server (SmolLM2-135M) as ``make demo`` starts it (every core, the
demo's slots of 2048 tokens each, or ``--slots``; no chat template; plus
``--metrics``, which only adds the ``/metrics`` endpoint) and ``twin-app
serve`` with the embedded default in a subprocess, as the app's tests start it
(``app_helpers.start_app``). Then, for each number of clients in turn, that
many clients each hold one conversation (client ``i`` keeps its conversation
from level to level, so the app's ``server.max_text_sessions`` of 16 is never
exceeded) and post one question after another to ``POST /api/chat`` until
``--seconds`` have passed or ``--max-turns`` turns have started, whichever
comes first; the turns under way then finish (each request at most
``REQUEST_TIMEOUT_S``). Only 127.0.0.1 is ever asked (:func:`local_url`).

For each level it reports:

- turns per second (answered turns over the level's time, in-flight ones included);
- time to first token, p50 and p95: the app's own measure of each text turn
  (its context leaving the user aggregator to the first answer text: routing,
  recall, waiting for llama-server and its first token), from the turn
  records in the app's log; and the whole answer as the client saw it;
- errors: a status other than 200, a failed request, or an answer no expert
  gave (the app's apology, ``routing`` absent); there must be none;
- the app's resident memory (``/proc/PID/statm``), at most and at the end;
- where the time went: the app's and llama-server's CPU time as cores
  (``/proc/PID/stat``), and llama-server's busy share of the level (its
  ``prompt_seconds_total`` and ``tokens_predicted_seconds_total`` against the
  level's time and its slots: every slot computing is 1.0) with the requests
  it kept waiting.

It saturates at the first level whose throughput grew less than
``SATURATED_GROWTH`` over the level before; :func:`limit` names what held it:
llama-server (its slots busy), the app (a core of CPU: one Python process), or
the machine's cores. Writes ``DIR/load.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
# app_helpers: the app as a subprocess, as the app's tests start it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps" / "pipecat_app" / "tests"))

from helpers.llama_server import start_llama_server
from helpers.llm_assets import llama_server_bin, smollm2_gguf

#: The only host this benchmark sends requests to.
LOCALHOST = "127.0.0.1"
QUESTIONS = [
    "What is the capital of France?",
    "How many days are there in a week?",
    "What do bees make?",
    "Which planet do we live on?",
    "Name a fruit that is yellow.",
    "What season comes after winter?",
    "What is the largest ocean on Earth?",
    "What do plants need to grow?",
]
#: llama-server's slots as ``make demo`` runs it (scripts/demo.sh, ``-np``), and
#: each slot's context (``-c`` is their sum): the demo config's context_length.
DEMO_SLOTS = 4
SLOT_CONTEXT = 2048
#: Longest wait for one answer (the app's own limit is 40 s with one expert).
REQUEST_TIMEOUT_S = 60.0
#: Pause of a client after an error, so a failing app is not hammered.
ERROR_PAUSE_S = 0.5
SAMPLE_EVERY_S = 0.5
#: A level whose turns per second grew less than this over the level before is saturated.
SATURATED_GROWTH = 1.2
#: A share of the level's time at or above which a resource is taken for the limit.
BUSY = 0.85


def local_url(url: str) -> str:
    """``url`` without a trailing slash, if it is http(s) on 127.0.0.1; else ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname != LOCALHOST:
        raise ValueError(f"bench_load targets {LOCALHOST} only, not {url!r}")
    return url.rstrip("/")


@dataclass
class Budget:
    """The turns a level may still start, and until when (``time.monotonic``)."""

    turns: int
    until: float

    def take(self) -> bool:
        """Whether one more turn may start (and count it)."""
        if self.turns <= 0 or time.monotonic() >= self.until:
            return False
        self.turns -= 1
        return True


@dataclass
class TurnResult:
    """One posted turn as its client saw it."""

    client: int
    seconds: float
    error: str | None = None


@dataclass
class Level:
    """What the clients and the samplers saw at one number of clients."""

    clients: int
    results: list[TurnResult] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    deferred: list[float] = field(default_factory=list)


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """``n``, ``p50`` and ``p95`` of ``values`` (None when there are none)."""
    if not values:
        return {"n": 0, "p50": None, "p95": None}
    arr = np.asarray(values, dtype=float)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(arr, 50)), 4),
        "p95": round(float(np.percentile(arr, 95)), 4),
    }


def outcome(response: httpx.Response) -> tuple[str | None, str | None]:
    """Why an ``/api/chat`` answer is not a good one (None: it is), and its conversation."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}", None
    try:
        body = response.json()
    except ValueError:
        return "not JSON", None
    session = body.get("session_id") if isinstance(body, dict) else None
    if not isinstance(session, str):
        return "no session_id", None
    if not body.get("text"):
        return "empty answer", session
    if body.get("routing") is None:
        return "no expert answered", session
    return None, session


async def client_loop(
    http: httpx.AsyncClient,
    url: str,
    client: int,
    budget: Budget,
    conversations: dict[int, str],
    level: Level,
) -> None:
    """Post questions, one at a time, in client ``client``'s conversation while ``budget`` lasts."""
    url = local_url(url)
    turn = client
    while budget.take():
        body: dict[str, str] = {"text": QUESTIONS[turn % len(QUESTIONS)]}
        if client in conversations:
            body["session_id"] = conversations[client]
        turn += 1
        started = time.monotonic()
        try:
            response = await http.post(f"{url}/api/chat", json=body)
        except httpx.HTTPError as exc:
            error: str | None = type(exc).__name__
        else:
            error, session = outcome(response)
            if session is not None:
                conversations[client] = session
        level.results.append(TurnResult(client, time.monotonic() - started, error))
        if error is not None:
            await asyncio.sleep(ERROR_PAUSE_S)


def _client() -> httpx.AsyncClient:
    # trust_env=False: no proxy from the environment stands between us and 127.0.0.1.
    return httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, trust_env=False)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid``."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_s(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def llama_metrics(text: str) -> dict[str, float]:
    """llama-server's ``/metrics`` samples without labels, by name without ``llamacpp:``."""
    return {
        m.group(1): float(m.group(2)) for m in re.finditer(r"^llamacpp:(\w+) (\S+)$", text, re.M)
    }


async def _sample(llama_url: str, app_pid: int, level: Level, stop: asyncio.Event) -> None:
    async with _client() as http:
        while not stop.is_set():
            level.rss_mb.append(rss_mb(app_pid))
            try:
                metrics = llama_metrics((await http.get(f"{llama_url}/metrics")).text)
                level.deferred.append(metrics.get("requests_deferred", 0.0))
            except httpx.HTTPError:
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)


def _busy_s(metrics: dict[str, float]) -> float:
    return metrics.get("prompt_seconds_total", 0.0) + metrics.get(
        "tokens_predicted_seconds_total", 0.0
    )


async def run_level(
    url: str,
    llama_url: str,
    pids: tuple[int, int],
    clients: int,
    seconds: float,
    max_turns: int,
    conversations: dict[int, str],
) -> tuple[Level, dict[str, float]]:
    """``clients`` clients for at most ``seconds`` and ``max_turns`` turns; the level, its costs."""
    url, llama_url = local_url(url), local_url(llama_url)
    app_pid, llama_pid = pids
    level = Level(clients)
    async with _client() as http:
        before = llama_metrics((await http.get(f"{llama_url}/metrics")).text)
        cpu_before = (cpu_s(app_pid), cpu_s(llama_pid))
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample(llama_url, app_pid, level, stop))
        started = time.monotonic()
        budget = Budget(max_turns, started + seconds)
        await asyncio.wait_for(
            asyncio.gather(
                *(client_loop(http, url, c, budget, conversations, level) for c in range(clients))
            ),
            seconds + REQUEST_TIMEOUT_S + 5,
        )
        elapsed = time.monotonic() - started
        stop.set()
        await sampler
        after = llama_metrics((await http.get(f"{llama_url}/metrics")).text)
    costs = {
        "elapsed_s": elapsed,
        "app_cpu_s": cpu_s(app_pid) - cpu_before[0],
        "llama_cpu_s": cpu_s(llama_pid) - cpu_before[1],
        "llama_busy_s": _busy_s(after) - _busy_s(before),
        "llama_tokens": after.get("tokens_predicted_total", 0.0)
        - before.get("tokens_predicted_total", 0.0),
        "llama_prompt_tokens": after.get("prompt_tokens_total", 0.0)
        - before.get("prompt_tokens_total", 0.0),
        "rss_end_mb": rss_mb(app_pid),
    }
    return level, costs


def summarize(
    level: Level, costs: dict[str, float], ttft_s: list[float], slots: int = 1
) -> dict[str, Any]:
    """One level's figures: throughput, first-token and answer times, errors, memory, costs.

    ``llama_busy`` is the share of llama-server's slot time spent computing
    (each slot's prompt and generation seconds, over the level's time and
    ``slots``): 1.0 is every slot busy all the time.
    """
    elapsed = costs["elapsed_s"]
    ok = [r for r in level.results if r.error is None]
    errors: dict[str, int] = {}
    for r in level.results:
        if r.error is not None:
            errors[r.error] = errors.get(r.error, 0) + 1
    return {
        "clients": level.clients,
        "seconds": round(elapsed, 2),
        "turns": len(level.results),
        "answered": len(ok),
        "turns_per_s": round(len(ok) / elapsed, 3) if elapsed > 0 else 0.0,
        "ttft_s": percentiles(ttft_s),
        "answer_s": percentiles([r.seconds for r in ok]),
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
        "app_rss_mb": {
            "max": round(max(level.rss_mb, default=costs["rss_end_mb"]), 1),
            "end": round(costs["rss_end_mb"], 1),
        },
        "app_cpu_cores": round(costs["app_cpu_s"] / elapsed, 3) if elapsed > 0 else 0.0,
        "llama_cpu_cores": round(costs["llama_cpu_s"] / elapsed, 3) if elapsed > 0 else 0.0,
        "llama_busy": round(costs["llama_busy_s"] / (elapsed * slots), 3) if elapsed > 0 else 0.0,
        "llama_tokens_per_s": round(costs["llama_tokens"] / elapsed, 1) if elapsed > 0 else 0.0,
        # Prompt tokens llama-server evaluated (not reused from its cache) per turn.
        "llama_prompt_tokens_per_turn": round(costs["llama_prompt_tokens"] / len(level.results), 1)
        if level.results
        else None,
        "llama_deferred": {
            "mean": round(float(np.mean(level.deferred)), 2) if level.deferred else None,
            "max": max(level.deferred, default=None),
        },
    }


def limit(level: dict[str, Any], cores: int) -> str:
    """What held a level back: llama-server, the app, the machine's cores, or nothing."""
    if level["llama_busy"] >= BUSY:
        return "llama-server"
    if level["app_cpu_cores"] >= BUSY:
        return "the app"
    if level["app_cpu_cores"] + level["llama_cpu_cores"] >= BUSY * cores:
        return "the CPU"
    return "nothing"


def saturation(levels: list[dict[str, Any]]) -> int | None:
    """The clients of the first level whose turns per second grew less than ``SATURATED_GROWTH``.

    None: the throughput grew enough at every level.
    """
    for before, level in itertools.pairwise(levels):
        if level["turns_per_s"] < SATURATED_GROWTH * before["turns_per_s"]:
            return int(level["clients"])
    return None


def _table(summary: dict[str, Any]) -> str:
    lines = [
        f"load: /api/chat, up to {summary['seconds_per_level']} s and "
        f"{summary['max_turns_per_level']} turns per level; TTFT: the app's own, per turn",
        f"{'clients':>7}{'turns/s':>9}{'TTFT p50':>10}{'TTFT p95':>10}{'answer p50':>12}"
        f"{'errors':>8}{'RSS MiB':>9}{'app CPU':>9}{'llama CPU':>11}{'llama busy':>12}"
        f"{'prompt/turn':>13}{'limit':>14}",
    ]

    def secs(stats: dict[str, Any], key: str) -> str:
        return "-" if stats[key] is None else f"{stats[key]:.3f}"

    for level in summary["levels"]:
        per_turn = level["llama_prompt_tokens_per_turn"]
        prompt = "-" if per_turn is None else f"{per_turn:.0f}"
        lines.append(
            f"{level['clients']:>7}{level['turns_per_s']:>9.2f}"
            f"{secs(level['ttft_s'], 'p50'):>10}{secs(level['ttft_s'], 'p95'):>10}"
            f"{secs(level['answer_s'], 'p50'):>12}{level['errors']:>8}"
            f"{level['app_rss_mb']['max']:>9.0f}{level['app_cpu_cores']:>9.2f}"
            f"{level['llama_cpu_cores']:>11.2f}{level['llama_busy']:>11.0%} "
            f"{prompt:>13}{level['limit']:>14}"
        )
    errors = sum(level["errors"] for level in summary["levels"])
    kinds = {k for level in summary["levels"] for k in level["errors_by_kind"]}
    lines.append(
        "CPU: cores of CPU time; llama busy: share of its slots' time computing; prompt/turn: "
        "prompt tokens llama-server evaluated per turn (not reused from its cache)"
    )
    lines.append(
        "errors: none"
        if not errors
        else f"errors: {errors} ({', '.join(sorted(kinds))}); the goal is none: NOT met"
    )
    saturated = summary["saturated_at_clients"]
    lines.append(
        "saturation: turns per second grew at every level"
        if saturated is None
        else f"saturation: at {saturated} clients (turns per second grew less than "
        f"x{SATURATED_GROWTH}); the limit there: {summary['limit_at_saturation']}"
    )
    return "\n".join(lines)


async def _levels(
    url: str, llama_url: str, pids: tuple[int, int], args: argparse.Namespace, log: Any
) -> list[dict[str, Any]]:
    conversations: dict[int, str] = {}
    # One turn first, not counted: the first turn loads what the app loads lazily.
    await run_level(url, llama_url, pids, 1, args.seconds, 1, conversations)
    levels = []
    for clients in args.clients:
        logged = len(log())
        level, costs = await run_level(
            url, llama_url, pids, clients, args.seconds, args.max_turns, conversations
        )
        # Turns an expert answered (not the app's apology after a failed expert).
        ttft = [
            t["total_s"] for t in log()[logged:] if t.get("expert") and t.get("total_s") is not None
        ]
        levels.append(summarize(level, costs, ttft, args.slots))
        print(f"  {clients:2d} clients: {levels[-1]['turns_per_s']} turns/s", flush=True)
    return levels


def main() -> int:
    """Run the load benchmark and write DIR/load.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for load.json")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 4, 16], help="clients at each level"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="longest time per level")
    parser.add_argument("--max-turns", type=int, default=400, help="most turns per level")
    parser.add_argument(
        "--slots",
        type=int,
        default=DEMO_SLOTS,
        help=f"llama-server's slots (-np), each with {SLOT_CONTEXT} tokens (default: the demo's)",
    )
    args = parser.parse_args()
    if args.seconds <= 0 or args.max_turns < 1 or min(args.clients) < 1 or args.slots < 1:
        parser.error("--seconds, --max-turns, --clients and --slots must be positive")
    if max(args.clients) > 16:
        parser.error("at most 16 clients: the demo's server.max_text_sessions")
    args.out.mkdir(parents=True, exist_ok=True)

    from app_helpers import app_environ, start_app

    state = Path(tempfile.mkdtemp(prefix="bench-load-"))
    load_before = os.getloadavg()
    # As scripts/demo.sh starts it: every core, no nice, no --jinja.
    with start_llama_server(
        llama_server_bin(),
        smollm2_gguf(),
        jinja=False,
        log=state / "llama-server.log",
        threads=None,
        nice=False,
        extra_args=["--metrics", "-np", str(args.slots), "-c", str(SLOT_CONTEXT * args.slots)],
    ) as llama:
        env = app_environ(state, llama.base_url)
        app = start_app(env, state / "app.log")
        try:
            levels = asyncio.run(
                _levels(app.url, llama.url, (app.proc.pid, llama.process.pid), args, app.turns)
            )
        finally:
            code = app.stop()

    cores = os.cpu_count() or 1
    for level in levels:
        level["limit"] = limit(level, cores)
    saturated = saturation(levels)
    summary = {
        "benchmark": "load",
        "seconds_per_level": args.seconds,
        "max_turns_per_level": args.max_turns,
        "levels": levels,
        "saturated_at_clients": saturated,
        "limit_at_saturation": next(
            (level["limit"] for level in levels if level["clients"] == saturated), None
        ),
        "app_exit_code": code,
        "setup": {
            "driven": "twin-app serve over HTTP: POST /api/chat (httpx), one conversation a client",
            "config": "apps/pipecat_app/config/demo.toml",
            "llm": "SmolLM2-135M-Instruct Q4_1 on llama-server",
            "llama_slots": args.slots,
            "slot_context": SLOT_CONTEXT,
            "cpus": cores,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
    }
    out = args.out / "load.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(_table(summary))
    print(f"wrote {out}")
    shutil.rmtree(state, ignore_errors=True)
    return 0 if any(level["answered"] for level in levels) else 1


if __name__ == "__main__":
    sys.exit(main())
