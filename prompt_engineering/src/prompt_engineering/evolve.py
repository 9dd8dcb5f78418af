"""Run OpenEvolve on the system prompt: the child process the CLI starts.

OpenEvolve installs SIGINT/SIGTERM handlers and runs its own event loop, so
it runs here, in a process of its own, on its main thread::

    python -m prompt_engineering.evolve <run_dir>/settings.json \
        --start-prompt PATH --iterations N [--checkpoint DIR]

It writes OpenEvolve's output (checkpoints, logs, best program) under
``<run_dir>/openevolve``.
"""

from __future__ import annotations

import argparse
import os
from importlib import resources
from pathlib import Path

from openevolve import run_evolution
from openevolve.config import Config, LLMModelConfig, load_config

from prompt_engineering.settings import ENV, RunSettings

#: A harmless key: OpenEvolve refuses to start without one, llama-server ignores it.
LOCAL_API_KEY = "local-no-key"


def package_file(name: str) -> Path:
    """A file shipped in the package (``openevolve.yaml``, ``templates``, ``evaluator.py``)."""
    return Path(str(resources.files("prompt_engineering") / name))


def openevolve_config(settings: RunSettings) -> Config:
    """``openevolve.yaml`` with this run's endpoint, model, seed and templates."""
    config = load_config(package_file("openevolve.yaml"))
    config.random_seed = settings.seed
    config.database.random_seed = settings.seed
    config.prompt.template_dir = str(package_file("templates"))
    model = LLMModelConfig(name=settings.mutator_model, weight=1.0)
    config.llm.models = [model]
    config.llm.evaluator_models = [model]
    config.llm.api_base = settings.mutator_url
    config.llm.api_key = os.environ.get("OPENAI_API_KEY") or LOCAL_API_KEY
    config.llm.temperature = settings.temperature
    if settings.mutator_max_tokens:
        config.llm.max_tokens = settings.mutator_max_tokens
    config.llm.update_model_params(
        {
            "api_base": settings.mutator_url,
            "api_key": config.llm.api_key,
            "temperature": settings.temperature,
            "max_tokens": config.llm.max_tokens,
            "timeout": config.llm.timeout,
            "retries": config.llm.retries,
            "retry_delay": config.llm.retry_delay,
            "random_seed": settings.seed,
            "system_message": config.prompt.system_message,
        },
        overwrite=True,
    )
    config.evaluator.cascade_thresholds = [settings.stage1_threshold]
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", type=Path)
    parser.add_argument("--start-prompt", type=Path, required=True)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--checkpoint", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ[ENV] = str(args.settings.resolve())
    settings = RunSettings.from_env()
    result = run_evolution(
        initial_program=str(args.start_prompt),
        evaluator=str(package_file("evaluator.py")),
        config=openevolve_config(settings),
        iterations=args.iterations,
        output_dir=str(settings.run_dir / "openevolve"),
        cleanup=False,
        checkpoint_path=str(args.checkpoint) if args.checkpoint else None,
    )
    print(f"openevolve: best score {result.best_score:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
