"""Time to first token and decode speed of the rendered expert jobs, prompt cache on and off.

Runs what the rendered one-node expert job runs (upstream llama.cpp's
llama-server, built by scripts/build-llama-server.sh, with the SmolLM2-135M
GGUF) and, when ``PRIMA_CPP_DIR`` names a built prima.cpp, a two-rank ring
in two network namespaces. Each is asked ``--requests`` streamed chat
completions that share a long system prompt and differ in the question,
once with ``cache_prompt: true`` (the shared prefix is reused) and once with
it off.

    python benchmarks/bench_experts.py --out DIR [--requests 10] [--max-tokens 32]

Writes ``DIR/experts.json`` and prints a table: p50/p90 of time to first
token (ms) and of tokens per second after the first token, and how many
prompt tokens the server evaluated per request (lower with the cache on).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import netns
from helpers.experts import job_vars, make_expert
from helpers.jobs import parse_job, render_job
from helpers.llm_assets import llama_server_bin, prima_cpp_bins, smollm2_gguf
from helpers.nomad_task import LocalTask, TaskSpec, in_netns

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
RING_IPS = ("10.78.0.1", "10.78.0.2")


@dataclass
class Sample:
    ttft_ms: float
    tokens: int
    tokens_per_s: float | None
    prompt_evaluated: int | None


def stream_chat(base: str, question: str, cache_prompt: bool, max_tokens: int) -> Sample:
    """One streamed chat completion; times the first content token and the rest."""
    body = {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "cache_prompt": cache_prompt,
    }
    started = time.perf_counter()
    first = last = None
    tokens = 0
    prompt_evaluated = None
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            timings = chunk.get("timings")
            if timings and "prompt_n" in timings:
                prompt_evaluated = int(timings["prompt_n"])
            for choice in chunk.get("choices", []):
                if (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    tokens += 1
    if first is None or last is None:
        raise RuntimeError(f"no content streamed for {question!r}")
    rate = (tokens - 1) / (last - first) if tokens > 1 and last > first else None
    return Sample((first - started) * 1000, tokens, rate, prompt_evaluated)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarize(samples: list[Sample]) -> dict[str, Any]:
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
    ask: Callable[[Callable[[], Any]], Any], base: str, requests: int, max_tokens: int
) -> dict[str, Any]:
    """Both cache settings against one running expert (a warm-up request first)."""
    out = {}
    for cache_prompt in (True, False):
        ask(lambda c=cache_prompt: stream_chat(base, "Hello!", c, max_tokens))
        samples = [
            ask(
                lambda i=i, c=cache_prompt: stream_chat(
                    base, QUESTIONS[i % len(QUESTIONS)], c, max_tokens
                )
            )
            for i in range(requests)
        ]
        out["on" if cache_prompt else "off"] = summarize(samples)
    return out


def expert_job(world: int, server: Path, worker: Path | None, model: Path) -> Any:
    expert = make_expert(
        world=world,
        context=2048,
        threads=1,  # one thread per process: spinning threads starve on a shared CPU
        model_path=f"/srv/nomad/models/{model.name}",
        layer_window=[15, 15] if world == 2 else None,
    )
    if world == 2:
        for rank, ip in zip(expert["ranks"], RING_IPS, strict=True):
            rank.update(node=f"ring{rank['rank']}", address=ip)
    bins = {"prima_cpp_server_bin": str(server)}
    if worker:
        bins["prima_cpp_worker_bin"] = str(worker)
    return parse_job(render_job("expert.nomad.hcl.j2", job_vars(expert, **bins)))


@contextmanager
def one_node(model: Path) -> Iterator[tuple[Callable[[Callable[[], Any]], Any], str]]:
    job = expert_job(1, llama_server_bin(), None, model)
    spec = TaskSpec.from_job(job, "rank-0", "server")
    with LocalTask(spec, host_volumes={"models": model.parent}) as task:
        task.wait_healthy(timeout=300)
        yield (lambda fn: fn()), task.url("http")


@contextmanager
def ring(model: Path, server: Path, worker: Path) -> Iterator[tuple[Callable, str]]:
    job = expert_job(2, server, worker, model)
    volumes = {"models": model.parent}
    with ExitStack() as stack:
        ns0, ns1 = stack.enter_context(netns.Link.pair(*RING_IPS))
        tail = LocalTask(
            TaskSpec.from_job(job, "rank-1", "worker"), volumes, netns=ns1.name, ip=ns1.address
        )
        head = LocalTask(
            TaskSpec.from_job(job, "rank-0", "server"), volumes, netns=ns0.name, ip=ns0.address
        )
        stack.enter_context(tail)
        stack.enter_context(head)
        head.wait_healthy(timeout=300)
        yield (lambda fn: in_netns(ns0.name, fn)), head.url("http")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for experts.json")
    parser.add_argument("--requests", type=int, default=10, help="streamed requests per setting")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens generated per request")
    parser.add_argument(
        "--targets",
        default="one-node,ring",
        help="comma-separated subset of: one-node, ring (default both)",
    )
    args = parser.parse_args()
    wanted = set(args.targets.split(","))
    if args.requests < 10:
        parser.error("--requests must be at least 10 for a meaningful p50/p90")

    model = smollm2_gguf()
    targets: list[tuple[str, Any]] = []
    if "one-node" in wanted:
        targets.append(("one-node llama-server", lambda: one_node(model)))
    prima = prima_cpp_bins()
    skipped = None
    if "ring" not in wanted:
        skipped = "two-rank ring not asked for (--targets)"
    elif prima is None:
        skipped = "PRIMA_CPP_DIR not set to a built prima.cpp: two-rank ring not measured"
    elif netns.available():
        skipped = f"two-rank ring not measured: {netns.available()}"
    else:
        targets.append(("two-rank prima.cpp ring", lambda: ring(model, *prima)))

    results = []
    for name, start in targets:
        with start() as (ask, base):
            results.append({"target": name, **measure(ask, base, args.requests, args.max_tokens)})

    report = {
        "benchmark": "experts",
        "model": model.name,
        "requests_per_setting": args.requests,
        "max_tokens": args.max_tokens,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
        "skipped": skipped,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "experts.json").write_text(json.dumps(report, indent=2) + "\n")

    print(f"experts: {model.name}, {args.requests} streamed requests per row")
    header = f"{'target':<26}{'cache':>6}{'TTFT p50':>10}{'p90':>8}{'tok/s p50':>11}{'p90':>7}"
    print(header + f"{'prompt tok':>12}")
    for result in results:
        for cache in ("on", "off"):
            row = result[cache]
            rate = row["tokens_per_s"] or {"p50": float("nan"), "p90": float("nan")}
            evaluated = row["prompt_tokens_evaluated_p50"]
            print(
                f"{result['target']:<26}{cache:>6}{row['ttft_ms']['p50']:>8.0f}ms"
                f"{row['ttft_ms']['p90']:>6.0f}ms{rate['p50']:>11.1f}{rate['p90']:>7.1f}"
                f"{'-' if evaluated is None else f'{evaluated:.0f}':>12}"
            )
    if skipped:
        print(skipped)
    print(f"wrote {args.out / 'experts.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
