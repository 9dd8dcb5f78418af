# Copyright: twin.cluster developers
# Apache License 2.0 (see galaxy.yml)
"""Time to first token and tokens per second of an expert's streamed chat completions.

The one copy of the experts' measuring code: ``benchmarks/bench_experts.py``
(a local expert job, prompt cache on and off) and the module
``twin.cluster.expert_benchmark`` (every expert of a cluster, from
``playbooks/benchmark.yml``) both time requests with :func:`stream_chat` and
sum them up with :func:`summarize`, asking the same questions after the same
long system prompt.

One request is one streamed chat completion (``stream: true``, greedy): its
time to first token is from sending the request to the first chunk with
content; its tokens per second are llama-server's own decode rate (the final
chunk's ``timings.predicted_per_second``) where the server reports one, else
the content chunks after the first over the time from the first to the last
(one token per chunk). Percentiles are nearest-rank.

:func:`experts_from_health` finds the experts in Consul's answer to
``/v1/health/service/<name>`` as the assistant does
(``apps/pipecat_app/src/pipecat_app/twin/discovery.py``;
``tests/test_expert_benchmark.py`` reads the same Consul answer the app's
tests do).

Only the standard library and Ansible's ``open_url`` (CA bundle, certificate
checks) are used, so the code runs inside a module and in a plain script.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from ansible.module_utils.urls import open_url

SYSTEM_PROMPT = (
    "You are the household's digital twin, a patient assistant that answers in one or two "
    "short sentences. You know the family's routines: school starts at eight, the bins go out "
    "on Tuesday evening, the cello lesson is on Thursday at five, grandmother calls on Sunday "
    "mornings, and the car is due for its service in March. Prefer concrete answers, say when "
    "you do not know, never invent appointments, and keep a friendly, calm tone. When a "
    "question is about cooking, suggest something quick with what is usually in the pantry: "
    "pasta, rice, eggs, tomatoes, onions, cheese, lentils and frozen peas. When it is about "
    "travel, mention the train first, then the bicycle, and the car only for long trips. "
) * 3
QUESTIONS = [
    "What should I cook tonight?",
    "When do the bins go out?",
    "How do I get to the station?",
    "Is there anything on Thursday?",
    "Who calls on Sunday?",
    "When is the car service?",
    "Give me a quick lunch idea.",
    "What time does school start?",
    "Should I take the bike today?",
    "What is in the pantry?",
    "Any plans for the weekend?",
    "Remind me about the cello lesson.",
]
WARMUP_QUESTION = "Hello!"


class ExpertError(Exception):
    """An expert could not be measured; the message says which, where and why."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one expert's OpenAI-compatible API."""

    base_url: str
    model: str | None = None
    api_key: str | None = None
    timeout: float = 60.0
    validate_certs: bool = True
    ca_path: str | None = None


@dataclass
class Sample:
    """One timed request."""

    ttft_ms: float
    tokens: int
    tokens_per_s: float | None
    prompt_evaluated: int | None


def _open(endpoint: Endpoint, path: str, body: Mapping[str, Any] | None = None) -> Any:
    """Send one request to ``base_url + path``; raise :class:`ExpertError` on any failure."""
    url = endpoint.base_url.rstrip("/") + path
    headers = {"Accept": "application/json"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    data = None
    if body is not None:
        data = json.dumps(body)
        headers["Content-Type"] = "application/json"
    try:
        return open_url(
            url,
            data=data,
            headers=headers,
            method="POST" if body is not None else "GET",
            timeout=endpoint.timeout,
            validate_certs=endpoint.validate_certs,
            ca_path=endpoint.ca_path,
        )
    except HTTPError as err:
        detail = err.read().decode("utf-8", "replace")[:500]
        raise ExpertError(f"{url} answered HTTP {err.code}: {detail or err.reason}") from err
    except (URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ExpertError(
            f"{url} is unreachable ({reason}): is the expert running and is the URL "
            "its OpenAI base URL (http://<host>:<port>/v1)?"
        ) from err


def check_reachable(endpoint: Endpoint) -> None:
    """Ask for the model list only (no generation); raise :class:`ExpertError` if it fails."""
    with _open(endpoint, "/models") as response:
        response.read()


def stream_chat(
    endpoint: Endpoint, question: str, *, cache_prompt: bool = True, max_tokens: int = 32
) -> Sample:
    """One streamed chat completion; times the first content token and the rest."""
    body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "cache_prompt": cache_prompt,
    }
    if endpoint.model:
        body["model"] = endpoint.model
    started = time.perf_counter()
    first = last = None
    tokens = 0
    prompt_evaluated = None
    server_rate = None
    try:
        with _open(endpoint, "/chat/completions", body) as response:
            for raw in response:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                timings = chunk.get("timings")
                if timings and "prompt_n" in timings:
                    prompt_evaluated = int(timings["prompt_n"])
                if timings and timings.get("predicted_per_second"):
                    server_rate = float(timings["predicted_per_second"])
                for choice in chunk.get("choices", []):
                    if (choice.get("delta") or {}).get("content"):
                        now = time.perf_counter()
                        first = first or now
                        last = now
                        tokens += 1
    except TimeoutError as err:
        raise ExpertError(
            f"{endpoint.base_url} did not finish an answer within {endpoint.timeout:g} s"
        ) from err
    except ValueError as err:
        raise ExpertError(f"{endpoint.base_url} streamed a chunk that is not JSON: {err}") from err
    if first is None or last is None:
        raise ExpertError(f"{endpoint.base_url} streamed no content for {question!r}")
    # llama-server's own decode rate where it reports one (``timings``): chunks
    # that reach a loaded client together would make the client's clock read
    # tens of thousands of tokens a second. Other servers: the client's clock.
    rate = server_rate
    if rate is None and tokens > 1 and last > first:
        rate = (tokens - 1) / (last - first)
    return Sample((first - started) * 1000, tokens, rate, prompt_evaluated)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in [0, 1]."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    """p50/p90 of time to first token and of tokens per second, and the samples."""
    ttft = [s.ttft_ms for s in samples]
    rates = [s.tokens_per_s for s in samples if s.tokens_per_s]
    evaluated = [s.prompt_evaluated for s in samples if s.prompt_evaluated is not None]
    return {
        "requests": len(samples),
        "ttft_ms": {"p50": percentile(ttft, 0.5), "p90": percentile(ttft, 0.9)},
        "tokens_per_s": {"p50": percentile(rates, 0.5), "p90": percentile(rates, 0.9)}
        if rates
        else None,
        "prompt_tokens_evaluated_p50": statistics.median(evaluated) if evaluated else None,
        "samples": [asdict(s) for s in samples],
    }


def measure(
    endpoint: Endpoint,
    requests: int,
    *,
    cache_prompt: bool = True,
    max_tokens: int = 32,
    warmup: bool = True,
) -> dict[str, Any]:
    """A warm-up request (not counted), then ``requests`` questions in turn, summarized."""
    if warmup:
        stream_chat(endpoint, WARMUP_QUESTION, cache_prompt=cache_prompt, max_tokens=max_tokens)
    samples = [
        stream_chat(
            endpoint,
            QUESTIONS[i % len(QUESTIONS)],
            cache_prompt=cache_prompt,
            max_tokens=max_tokens,
        )
        for i in range(requests)
    ]
    return summarize(samples)


def _all_passing(checks: Sequence[Mapping[str, Any]]) -> bool:
    return all(check.get("Status") == "passing" for check in checks)


def experts_from_health(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The experts of a ``/v1/health/service/<name>`` answer, found as the app finds them.

    Instances with a check that is not passing, without an address and port,
    or with a meta ``scheme`` other than http/https are left out. Each expert
    is ``{name, service_id, node, url, model, domain}``: meta ``expert`` (the
    prima_cpp expert's name; the service ID without it), the service ID, the Consul node,
    the OpenAI base URL (meta ``scheme`` and ``base_path``, default
    ``http`` and ``/v1``), meta ``model`` and ``domain``. Sorted by name.
    """
    experts = []
    for entry in entries:
        service = entry.get("Service") or {}
        node = entry.get("Node") or {}
        if not _all_passing(entry.get("Checks") or []):
            continue
        address = service.get("Address") or node.get("Address")
        port = service.get("Port")
        meta = service.get("Meta") or {}
        scheme = (meta.get("scheme") or "http").strip().lower()
        if not address or not port or scheme not in ("http", "https"):
            continue
        host = f"[{address}]" if ":" in address else address
        service_id = service.get("ID") or f"{service.get('Service')}-{address}-{port}"
        base_path = "/" + (meta.get("base_path") or "/v1").strip("/")
        experts.append(
            {
                "name": meta.get("expert") or service_id,
                "service_id": service_id,
                "node": node.get("Node") or address,
                "url": f"{scheme}://{host}:{port}{base_path}",
                "model": meta.get("model") or "default",
                "domain": meta.get("domain") or "general",
            }
        )
    return sorted(experts, key=lambda expert: (expert["name"], expert["service_id"]))


def node_of(url: str) -> str:
    """The host of an expert's URL, for an expert given without its node."""
    return urlsplit(url).hostname or ""


def _figure(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One aligned text table of measured experts (``error`` rows say why they have none)."""
    header = ("expert", "node / url", "model", "TTFT p50 ms", "p90 ms", "tok/s p50")
    lines = []
    for row in rows:
        ttft = row.get("ttft_ms") or {}
        rate = row.get("tokens_per_s") or {}
        figures = (
            _figure(ttft.get("p50"), ".0f"),
            _figure(ttft.get("p90"), ".0f"),
            _figure(rate.get("p50"), ".1f"),
        )
        if row.get("error"):
            figures = ("failed", "", "")
        elif row.get("checked_only"):
            figures = ("reachable", "", "")
        lines.append(
            (row["name"], f"{row['node']} {row['url']}", row.get("model") or "-", *figures)
        )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    out = []
    for cells in (header, *lines):
        text = "  ".join(
            str(cell).ljust(width) if i < 3 else str(cell).rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        out.append(text.rstrip())
    for row in rows:
        if row.get("error"):
            out.append(row["error"])
    return "\n".join(out)
