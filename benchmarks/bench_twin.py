"""TwinService's own overhead per turn, with 100,000 memories in the database.

Measures what TwinService adds to every turn before the first byte goes to
an expert: routing (rules + similarity over the experts), embedding the turn
once (all-MiniLM-L6-v2, for recall by meaning), memory recall (FTS5/BM25 and
the nearest vectors in sqlite-vec, fused, weighted by recency) fitted to the
token budget, and building the request (context conversion, history fit).
No LLM is called: the expert's own time is the voice benchmark's business.

Every memory has a vector, as in a store whose background thread has caught
up. Embedding 100,000 texts would take minutes, so the vectors are those of
``--embedded`` distinct generated texts, handed out in turn: the search
costs the same, as sqlite-vec compares every vector of the user.

    python benchmarks/bench_twin.py --out DIR [--memories 100000] [--turns 300]

Writes ``DIR/twin.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from pipecat_app.twin.config import TwinConfig
from pipecat_app.twin.embedding import sentence_encoder
from pipecat_app.twin.memory import MemoryStore
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
STAGES = ("route", "embed", "recall", "context")
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


def fill_memory(path: Path, count: int, user_id: str, embedded: int) -> float:
    """Insert ``count`` memories spread over a year, each with a vector; returns seconds taken.

    The vectors are those of the first ``embedded`` texts, handed out in turn.
    """
    rng = random.Random(42)
    now = time.time()
    rows = []
    for i in range(count):
        words = rng.sample(TOPICS, 2) + rng.choices(FILLER, k=10) + [f"item{rng.randint(0, 20000)}"]
        rng.shuffle(words)
        kind = "fact" if i % 20 == 0 else "episode"
        created = now - (count - i) * (365 * 86400 / count)
        rows.append((user_id, kind, "user" if i % 2 else "assistant", " ".join(words), created))
    encoder = sentence_encoder()
    store = MemoryStore(path)  # no background thread: the vectors are written below
    assert store.open(), store.error
    start = time.perf_counter()
    store.remember_many(rows)
    vectors = encoder.encode([row[3] for row in rows[:embedded]])
    store.prepare_vectors(encoder.model, encoder.dimensions)
    for first in range(0, count, 5000):
        ids = list(range(first + 1, min(count, first + 5000) + 1))
        store.write_vectors(ids, np.stack([vectors[(i - 1) % embedded] for i in ids]))
    store.close()
    return time.perf_counter() - start


async def run(memories: int, turns: int, workdir: Path, embedded: int) -> dict[str, Any]:
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
    insert_s = fill_memory(workdir / "memory.sqlite3", memories, "bench", embedded)
    twin = TwinService(config)
    (turn_stage,) = twin.processors()
    assert isinstance(turn_stage, TwinLLMProcessor)
    await twin.start()
    # Loading the sentence model and embedding take far longer on a loaded
    # machine; say what was missing if the wait still runs out.
    if not twin.memory.wait_indexed(timeout=600):
        raise RuntimeError(
            "the memory's background thread did not catch up in 600 s: "
            f"encoder loaded: {twin.memory.encoder is not None}, "
            f"memory error: {twin.memory.error}, "
            "memories waiting for a vector (up to 1000 counted): "
            f"{len(twin.memory.unembedded(1000))}"
        )
    stages: dict[str, list[float]] = {name: [] for name in (*STAGES, "total")}
    cpu: dict[str, list[float]] = {name: [] for name in (*STAGES, "total")}
    try:
        for i in range(turns):
            # A new sentence each turn, so no turn reuses the previous one's vector.
            question = f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"
            twin.context.add_message({"role": "user", "content": question})
            marks = [(time.perf_counter(), time.thread_time())]
            decision = twin.router.route(question, twin.cluster.experts.experts, twin.routing_state)
            marks.append((time.perf_counter(), time.thread_time()))
            twin.memory.embed_query(question)  # the turn's one embedding; recall reuses it
            marks.append((time.perf_counter(), time.thread_time()))
            recalled = turn_stage.recalled(question)
            marks.append((time.perf_counter(), time.thread_time()))
            history = await turn_stage.history(twin.context)
            fit_history(
                history,
                turn_stage.system_message(),
                decision.expert.context_length,
                twin.client.max_tokens,
                turn_context=recalled,
            )
            marks.append((time.perf_counter(), time.thread_time()))
            for name, start, end in zip(STAGES, marks, marks[1:], strict=False):
                stages[name].append(end[0] - start[0])
                cpu[name].append(end[1] - start[1])
            stages["total"].append(marks[-1][0] - marks[0][0])
            cpu["total"].append(marks[-1][1] - marks[0][1])
            twin.context.add_message({"role": "assistant", "content": "An answer of a few words."})
            twin.routing_state.commit(decision)
            twin.turn_memory.remember_turn("user", question)
            # Its vector is written in the background, as while the expert answers.
            twin.memory.wait_indexed()
    finally:
        await twin.stop()
    return {
        "benchmark": "twin_overhead",
        "memories": memories,
        "embedded_texts": embedded,
        "turns": turns,
        "memory_insert_s": round(insert_s, 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "stages_ms": summary(stages),
        # This thread's CPU time per stage (onnxruntime runs on it with one
        # thread): what the stage costs when no other process competes for the core.
        "stages_cpu_ms": summary(cpu),
    }


def summary(stages: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """p50, p99, mean and max of each stage, in milliseconds."""
    return {
        name: {
            "p50": round(percentile(values, 0.50) * 1000, 3),
            "p99": round(percentile(values, 0.99) * 1000, 3),
            "mean": round(statistics.fmean(values) * 1000, 3),
            "max": round(max(values) * 1000, 3),
        }
        for name, values in stages.items()
    }


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for twin.json")
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument(
        "--embedded", type=int, default=2000, help="distinct texts embedded for the vectors"
    )
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-twin-") as tmp:
        result = asyncio.run(
            run(args.memories, args.turns, Path(tmp), min(args.embedded, args.memories))
        )
    (args.out / "twin.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"TwinService overhead per turn ({result['memories']:,} memories, {result['turns']} turns)"
    )
    print(f"load average {result['load_average']}")
    print(f"{'stage':<10} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'cpu p50':>9} {'cpu p99':>9}")
    for name, row in result["stages_ms"].items():
        spent = result["stages_cpu_ms"][name]
        print(
            f"{name:<10} {row['p50']:>9.3f} {row['p99']:>9.3f} {row['max']:>9.3f}"
            f" {spent['p50']:>9.3f} {spent['p99']:>9.3f}"
        )
    print(f"wrote {args.out / 'twin.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
