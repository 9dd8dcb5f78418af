"""Routing accuracy on the labelled suite, old router beside new, and the router's cost.

Plays the routing suite (``benchmarks/data/routing_suite.json``: conversations
of labelled turns across the general, code, home and vision domains, with
follow-ups and turns that belong to no expert) through the router with the
example inventory's experts (``inventory/example``) and the pipecat_app
role's default ``[twin.routing]``. Reports accuracy on the tuning and the
test half for the router of this tree deciding by the turn's sentence
embedding (``embedding``) and by its TF-IDF fallback (``tfidf``, while the
model is not loaded), and for the router before example utterances (its
source read from git at ``OLD_ROUTER_COMMIT``); the misses on the test half;
routing latency per turn (p50/p99, the turn's embedding included) for both
encoders; and the sentence model's load time and memory.

    python benchmarks/bench_routing.py --out DIR [--rounds 20]

Writes ``DIR/routing.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.routing_suite import (
    ROOT,
    SentenceEmbedder,
    accuracy,
    conversations,
    example_experts,
    role_routing,
    run_suite,
)

#: The last commit whose router compared turns to the experts' descriptions
#: (hand-made stop words and suffix stripper, stickiness on zero evidence).
OLD_ROUTER_COMMIT = "7b5c1d2aa9a801d033057f3b655182909fb89112"
ROUTER_PATH = "apps/pipecat_app/src/pipecat_app/twin/router.py"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def old_router_module() -> types.ModuleType | None:
    """The router module as it was at ``OLD_ROUTER_COMMIT`` (None: no git history here)."""
    proc = subprocess.run(
        ["git", "show", f"{OLD_ROUTER_COMMIT}:{ROUTER_PATH}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if proc.returncode != 0:
        return None
    module = types.ModuleType("old_router")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(proc.stdout, f"{OLD_ROUTER_COMMIT[:7]}:{ROUTER_PATH}", "exec"), module.__dict__)
    return module


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def evaluate(module: Any, experts: list[Any], config: Any, **router: Any) -> dict[str, Any]:
    """Accuracy per half and the test half's misses, for one router module."""
    result: dict[str, Any] = {}
    for split in ("tune", "test"):
        outcomes = run_suite(
            module.Router(config, **router),
            experts,
            conversations(split),
            state_factory=module.RoutingState,
        )
        result[f"{split}_accuracy"] = round(accuracy(outcomes), 4)
        result[f"{split}_turns"] = len(outcomes)
        if split == "test":
            result["test_misses"] = [
                {
                    "text": o.turn.text,
                    "want": o.turn.domain,
                    "got": o.domain,
                    "reason": o.reason,
                    "score": round(o.score, 3),
                }
                for o in outcomes
                if not o.right
            ]
    return result


def latency(router: Any, experts: list[Any], state_factory: Any, rounds: int) -> dict[str, Any]:
    """p50/p99 of ``router.route`` over ``rounds`` passes of the test half, in ms.

    Wall time, and this thread's CPU time (onnxruntime runs the model on it
    with one thread): what a turn costs when no other process competes.
    """
    wall: list[float] = []
    cpu: list[float] = []
    test = conversations("test")
    for _ in range(rounds):
        for conv in test:
            state = state_factory()
            for turn in conv:
                t0, c0 = time.perf_counter(), time.thread_time()
                decision = router.route(turn.text, experts, state)
                wall.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.thread_time() - c0) * 1000)
                state.commit(decision)
    return {
        "p50": round(statistics.median(wall), 3),
        "p99": round(percentile(wall, 99), 3),
        "cpu_p50": round(statistics.median(cpu), 3),
        "cpu_p99": round(percentile(cpu, 99), 3),
        "decisions": len(wall),
    }


def run(rounds: int) -> dict[str, Any]:
    """Measure the routers; ``rounds`` passes over the test half for latency."""
    from pipecat_app.twin import router as new_router

    experts = example_experts()
    config = role_routing()
    tfidf = new_router.Router(config)
    tfidf.route("warm up", experts)  # fits and encodes the domains' examples
    rss_before = _rss_mb()
    started = time.perf_counter()
    embedder = SentenceEmbedder()
    load_s = time.perf_counter() - started
    embedding = new_router.Router(config, embedder=embedder)
    started = time.perf_counter()
    assert embedding.prepare(experts) == "embedding"
    examples_s = time.perf_counter() - started
    rss_after = _rss_mb()

    old = old_router_module()
    return {
        "experts": [(e.name, e.domain, len(e.examples)) for e in experts],
        "routing": config.model_dump(),
        "embedding": evaluate(new_router, experts, config, embedder=embedder),
        "tfidf": evaluate(new_router, experts, config),
        "old": evaluate(old, experts, config)
        if old is not None
        else {"skipped": f"no git history with {OLD_ROUTER_COMMIT[:7]}"},
        "latency_ms": {
            "embedding": latency(embedding, experts, new_router.RoutingState, rounds),
            "tfidf": latency(tfidf, experts, new_router.RoutingState, rounds),
        },
        "encoder": {
            "kind": "all-MiniLM-L6-v2 int8 ONNX (fallback: tfidf, words + char_wb 3-5)",
            "load_s": round(load_s, 3),
            "examples_embedded_s": round(examples_s, 3),
            "rss_growth_mb": round(rss_after - rss_before, 1),
        },
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for routing.json")
    parser.add_argument("--rounds", type=int, default=20, help="passes over the test half")
    args = parser.parse_args()
    result = run(args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "routing.json").write_text(json.dumps(result, indent=2) + "\n")
    lat, enc = result["latency_ms"], result["encoder"]
    test_turns = result["embedding"]["test_turns"]
    print(f"routing suite ({test_turns} test turns, {result['embedding']['tune_turns']} tuning)")
    print(f"  {'router':<10} {'tune':>7} {'test':>7}")
    for name in ("old", "tfidf", "embedding"):
        r = result[name]
        if "skipped" in r:
            print(f"  {name:<10} skipped: {r['skipped']}")
        else:
            print(f"  {name:<10} {r['tune_accuracy']:>7.1%} {r['test_accuracy']:>7.1%}")
    for name, row in lat.items():
        print(
            f"  latency per turn ({name}): p50 {row['p50']:.3f} ms, p99 {row['p99']:.3f} ms;"
            f" cpu p50 {row['cpu_p50']:.3f} ms, p99 {row['cpu_p99']:.3f} ms"
        )
    print(
        f"  encoder {enc['kind']}: load {enc['load_s']:.2f} s, examples embedded in "
        f"{enc['examples_embedded_s']:.2f} s, +{enc['rss_growth_mb']} MB"
    )
    print(f"  load average {result['load_average']}")
    for miss in result["embedding"]["test_misses"]:
        print(f"  miss: {miss['text']!r} want {miss['want']} got {miss['got']} ({miss['reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
