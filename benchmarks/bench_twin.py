"""TwinService's own overhead per turn, with 100,000 memories in the database.

Measures what TwinService adds to every turn before the first byte goes to
an expert: routing (rules + similarity over the experts), memory recall
(FTS5 + recency) fitted to the token budget, and building the request
(context conversion, history fit). No LLM is called: the expert's own time
is the voice benchmark's business.

    python benchmarks/bench_twin.py --out DIR [--memories 100000] [--turns 300]

Writes ``DIR/twin.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat_app.twin.config import TwinConfig
from pipecat_app.twin.service import TwinLLMProcessor, TwinService, fit_history

TOPICS = [
    "python",
    "garden",
    "coffee",
    "school",
    "football",
    "piano",
    "recipe",
    "holiday",
    "doctor",
    "birthday",
    "train",
    "weather",
    "bicycle",
    "cello",
    "lisbon",
    "grandmother",
    "car",
    "dentist",
    "bread",
    "movie",
    "book",
    "camera",
    "printer",
    "wifi",
    "password",
    "meeting",
    "budget",
]
FILLER = [
    "today",
    "yesterday",
    "tomorrow",
    "really",
    "maybe",
    "think",
    "quite",
    "little",
    "big",
    "small",
    "always",
    "never",
    "again",
    "morning",
    "evening",
    "week",
    "month",
    "later",
    "early",
    "late",
    "house",
    "kitchen",
    "office",
    "street",
    "market",
    "park",
]
QUESTIONS = [
    "How do I fix this Python bug in my function?",
    "What should I cook tonight with bread and tomatoes?",
    "When is my grandmother's birthday again?",
    "Can you remind me about the dentist appointment?",
    "Tell me something nice about the weather.",
    "What was the wifi password we talked about?",
    "Recommend a movie for tonight.",
    "Hello, how are you?",
    "Which train do I take to Lisbon?",
    "How much was the holiday budget?",
]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, nearest-rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def fill_memory(twin: TwinService, count: int, user_id: str) -> float:
    """Insert ``count`` memories spread over a year; returns seconds taken."""
    rng = random.Random(42)
    now = time.time()
    rows = []
    for i in range(count):
        words = rng.sample(TOPICS, 2) + rng.choices(FILLER, k=10) + [f"item{rng.randint(0, 20000)}"]
        rng.shuffle(words)
        kind = "fact" if i % 20 == 0 else "episode"
        created = now - (count - i) * (365 * 86400 / count)
        rows.append((user_id, kind, "user" if i % 2 else "assistant", " ".join(words), created))
    start = time.perf_counter()
    twin.memory.remember_many(rows)
    return time.perf_counter() - start


async def run(memories: int, turns: int, workdir: Path) -> dict[str, Any]:
    """Measure ``turns`` turns; returns the results."""
    config = TwinConfig.model_validate(
        {
            "user_id": "bench",
            "memory": {"path": str(workdir / "memory.sqlite3"), "token_budget": 512},
            "experts": [
                {
                    "name": "general",
                    "domain": "general",
                    "description": "Everyday conversation and general knowledge",
                    "base_url": "http://127.0.0.1:9/v1",
                },
                {
                    "name": "code",
                    "domain": "code",
                    "description": "Programming, Python code, debugging software bugs",
                    "base_url": "http://127.0.0.1:9/v1",
                    "tool_calls": True,
                },
                {
                    "name": "chef",
                    "domain": "cooking",
                    "description": "Recipes, cooking, baking and food",
                    "base_url": "http://127.0.0.1:9/v1",
                },
            ],
            "routing": {
                "rules": [{"domain": "code", "pattern": r"(?i)\b(stack ?trace|segfault)\b"}]
            },
        }
    )
    twin = TwinService(config)
    (turn_stage,) = twin.processors()
    assert isinstance(turn_stage, TwinLLMProcessor)
    await twin.start()
    insert_s = fill_memory(twin, memories, "bench")
    stages: dict[str, list[float]] = {"route": [], "recall": [], "context": [], "total": []}
    try:
        for i in range(turns):
            question = QUESTIONS[i % len(QUESTIONS)]
            twin.context.add_message({"role": "user", "content": question})
            t0 = time.perf_counter()
            decision = twin.router.route(question, twin.cluster.experts.experts, twin.routing_state)
            t1 = time.perf_counter()
            system = turn_stage.system_message(question)
            t2 = time.perf_counter()
            history = await turn_stage.history(twin.context)
            fit_history(history, system, decision.expert.context_length, twin.client.max_tokens)
            t3 = time.perf_counter()
            stages["route"].append(t1 - t0)
            stages["recall"].append(t2 - t1)
            stages["context"].append(t3 - t2)
            stages["total"].append(t3 - t0)
            twin.context.add_message({"role": "assistant", "content": "An answer of a few words."})
            twin.routing_state.commit(decision)
            twin.turn_memory.remember_turn("user", question)
    finally:
        await twin.stop()
    return {
        "benchmark": "twin_overhead",
        "memories": memories,
        "turns": turns,
        "memory_insert_s": round(insert_s, 3),
        "stages_ms": {
            name: {
                "p50": round(percentile(values, 0.50) * 1000, 3),
                "p99": round(percentile(values, 0.99) * 1000, 3),
                "mean": round(statistics.fmean(values) * 1000, 3),
                "max": round(max(values) * 1000, 3),
            }
            for name, values in stages.items()
        },
    }


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for twin.json")
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--turns", type=int, default=300)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-twin-") as tmp:
        result = asyncio.run(run(args.memories, args.turns, Path(tmp)))
    (args.out / "twin.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"TwinService overhead per turn ({result['memories']:,} memories, {result['turns']} turns)"
    )
    print(f"{'stage':<10} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for name, row in result["stages_ms"].items():
        print(f"{name:<10} {row['p50']:>9.3f} {row['p99']:>9.3f} {row['max']:>9.3f}")
    print(f"wrote {args.out / 'twin.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
