"""Recall by meaning: recall@3 by BM25, by vectors and hybrid, and the embedding model's cost.

Stores the recall suite's memories (``benchmarks/data/recall_suite.json``:
facts one user told the assistant, hand-written) in a fresh memory store
with ``--distractors`` unrelated episodic memories around them, lets the
store's background thread embed them all, and asks each question three
ways: BM25 alone (the store without a query vector), vectors alone
(``lexical=False``) and hybrid (both, fused by reciprocal rank, as a turn
does). A question counts when the memory that answers it is among the first
three recalled. "paraphrase" questions share no content word with their
answer; "lexical" ones do (hybrid must not lose them).

Also measures the embedding model (all-MiniLM-L6-v2, int8 ONNX): load time,
the process's memory growth while loading, and the time to embed one turn
(p50/p99 over the suite's questions).

    python benchmarks/bench_recall.py --out DIR [--distractors 500] [--rounds 20]

Writes ``DIR/recall.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat_app.twin.embedding import SENTENCE_MODEL, SentenceEncoder, sentence_encoder
from pipecat_app.twin.memory import MemoryStore

SUITE = Path(__file__).resolve().parent / "data" / "recall_suite.json"
WAYS = ("bm25", "vectors", "hybrid")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, nearest-rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_model(questions: list[str], rounds: int) -> tuple[SentenceEncoder, dict[str, Any]]:
    """Load the encoder (timed, memory growth) and time one-turn embeddings."""
    before = rss_mb()
    start = time.perf_counter()
    encoder = sentence_encoder()
    load_s = time.perf_counter() - start
    grown = rss_mb() - before
    encoder.encode(questions[:3])  # the first runs set up onnxruntime's buffers
    timings = []
    for _ in range(rounds):
        for question in questions:
            started = time.perf_counter()
            encoder.encode([question])
            timings.append((time.perf_counter() - started) * 1000)
    return encoder, {
        "model": SENTENCE_MODEL,
        "load_s": round(load_s, 3),
        "rss_growth_mb": round(grown, 1),
        "embed_turn_ms": {
            "p50": round(percentile(timings, 0.5), 3),
            "p99": round(percentile(timings, 0.99), 3),
            "mean": round(statistics.fmean(timings), 3),
        },
    }


def distractors(count: int) -> list[str]:
    """Unrelated small talk, as episodic turns fill a real store."""
    rng = random.Random(11)
    subjects = ["the weather", "the news", "a film", "the traffic", "lunch", "a podcast"]
    verbs = ["was", "seemed", "looked", "felt"]
    moods = ["fine", "odd", "long", "quiet", "busy", "nice", "boring", "great"]
    times = ["today", "yesterday", "this week", "last night", "this morning"]
    return [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(moods)} {rng.choice(times)}"
        for _ in range(count)
    ]


def run(workdir: Path, distractor_count: int, rounds: int) -> dict[str, Any]:
    """Play the suite; returns the results."""
    suite = json.loads(SUITE.read_text())
    questions = suite["questions"]
    _, model = measure_model([q["text"] for q in questions], rounds)
    store = MemoryStore(workdir / "memory.sqlite3", encoder=sentence_encoder)
    assert store.open(), store.error
    try:
        now = time.time()
        store.remember_many(
            ("bench", "episode", "user", text, now - 86400 - i)
            for i, text in enumerate(distractors(distractor_count))
        )
        ids = [store.remember("bench", text, at=now - 3600) for text in suite["memories"]]
        if not store.wait_indexed(timeout=600):
            raise RuntimeError("the memories were not embedded within 10 minutes")
        hits: dict[str, dict[str, int]] = {}
        misses: dict[str, list[str]] = {way: [] for way in WAYS}
        for question in questions:
            text, answer, kind = question["text"], ids[question["answer"]], question["kind"]
            vector = store.embed_query(text)
            found = {
                "bm25": store.recall("bench", text, limit=3),
                "vectors": store.recall("bench", text, limit=3, query_vector=vector, lexical=False),
                "hybrid": store.recall("bench", text, limit=3, query_vector=vector),
            }
            for way, items in found.items():
                counts = hits.setdefault(kind, {w: 0 for w in WAYS} | {"questions": 0})
                if answer in [i.id for i in items]:
                    counts[way] += 1
                elif kind == "paraphrase" or way == "hybrid":
                    misses[way].append(text)
            hits[kind]["questions"] += 1
    finally:
        store.close()
    return {
        "benchmark": "recall",
        "memories": len(suite["memories"]),
        "distractors": distractor_count,
        "recall_at_3": {
            kind: {way: round(counts[way] / counts["questions"], 3) for way in WAYS}
            | {"questions": counts["questions"]}
            for kind, counts in hits.items()
        },
        "misses": misses,
        "model": model,
    }


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for recall.json")
    parser.add_argument("--distractors", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20, help="timing rounds over the questions")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-recall-") as tmp:
        result = run(Path(tmp), args.distractors, args.rounds)
    (args.out / "recall.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"recall@3 ({result['memories']} memories, {result['distractors']} distractors)"
        f"\n{'questions':<12} {'n':>4} {'bm25':>7} {'vectors':>8} {'hybrid':>7}"
    )
    for kind, row in result["recall_at_3"].items():
        print(
            f"{kind:<12} {row['questions']:>4} {row['bm25']:>7.2f} {row['vectors']:>8.2f}"
            f" {row['hybrid']:>7.2f}"
        )
    model = result["model"]
    turn = model["embed_turn_ms"]
    print(
        f"{model['model']}: load {model['load_s']:.2f} s, +{model['rss_growth_mb']} MB, "
        f"one turn p50 {turn['p50']:.2f} ms p99 {turn['p99']:.2f} ms"
    )
    print(f"wrote {args.out / 'recall.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
