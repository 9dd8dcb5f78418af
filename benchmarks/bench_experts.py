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
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import netns
from helpers.experts import job_vars, make_expert
from helpers.jobs import parse_job, render_job
from helpers.llm_assets import llama_server_bin, prima_cpp_bins, smollm2_gguf
from helpers.nomad_task import LocalTask, TaskSpec, in_netns

# The measuring code is the collection's, shared with twin.cluster.expert_benchmark
# (playbooks/benchmark.yml); `make deps` links the checkout there as twin.cluster.
# Imported after the helpers: they set up Ansible's collection loader, which must
# see the collection first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / ".cache" / "collections"))

from ansible_collections.twin.cluster.plugins.module_utils import expert_bench
from ansible_collections.twin.cluster.plugins.module_utils.expert_bench import Endpoint

RING_IPS = ("10.78.0.1", "10.78.0.2")


def measure(
    ask: Callable[[Callable[[], Any]], Any], base: str, requests: int, max_tokens: int
) -> dict[str, Any]:
    """Both cache settings against one running expert (a warm-up request first)."""
    endpoint = Endpoint(f"{base}/v1", timeout=300)
    return {
        "on" if cache_prompt else "off": ask(
            lambda c=cache_prompt: expert_bench.measure(
                endpoint, requests, cache_prompt=c, max_tokens=max_tokens
            )
        )
        for cache_prompt in (True, False)
    }


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
    # A one-node expert runs upstream llama-server (engine llama.cpp), a ring prima.cpp.
    bins = {"prima_cpp_server_bin": str(server), "prima_cpp_llama_server_bin": str(server)}
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
