"""``prompt-evolve`` (``make evolve``): evolve the system prompt, report, publish only a winner.

1. Finds the assistant's endpoints: given URLs, or the healthy experts of one
   domain in Consul (``--consul-service``, the app's own discovery code); then
   checks that both model endpoints answer (a dead one stops here, clearly).
2. Runs OpenEvolve in a child process (:mod:`prompt_engineering.evolve`),
   from the last checkpoint with ``--resume``, printing each evaluation and
   iteration as it happens.
3. Scores the starting prompt, the best one and the currently published one
   on the held-out cases (the training scores come from the evolution).
4. Writes ``report.json`` and ``scores.png`` into the run directory.
5. Publishes the best prompt only when it beats the current one on the
   held-out set, with check-and-set, to Consul KV (``--consul-key``) or a file
   (``--publish-file``); otherwise says why nothing was published.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat_app.twin.config import SHIPPED_PROMPT, DiscoveryConfig

from prompt_engineering import report
from prompt_engineering.experts import discover
from prompt_engineering.publish import ConsulTarget, FileTarget, Target
from prompt_engineering.runner import EndpointDown, check_endpoint
from prompt_engineering.settings import RunSettings
from prompt_engineering.suite import load_cases, select

DEFAULT_URL = "http://127.0.0.1:8080/v1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="prompt-evolve", description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, default=Path(".cache/prompt-evolve"))
    p.add_argument("--iterations", type=int, default=10, help="iterations to run (more on resume)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--assistant-url",
        action="append",
        default=None,
        help="the assistant's OpenAI-compatible URL; repeat for several experts (cases go to "
        f"each in turn); default $PROMPT_EVOLVE_ASSISTANT_URL or {DEFAULT_URL}",
    )
    p.add_argument("--assistant-model", default="smollm2-135m")
    p.add_argument(
        "--consul-service",
        default=None,
        help="find the assistant's endpoints in Consul instead: the healthy instances of this "
        "service (the expert jobs' llm-expert) of --expert-domain, with the model their meta "
        "names; address, token and CA as for --consul-key",
    )
    p.add_argument("--expert-domain", default="general", help="with --consul-service")
    p.add_argument(
        "--consul-addr",
        default=None,
        help="Consul's HTTP(S) address; default $CONSUL_HTTP_ADDR or http://127.0.0.1:8500 "
        "(token: $CONSUL_HTTP_TOKEN)",
    )
    p.add_argument("--consul-ca-file", default="", help="default $CONSUL_CACERT")
    p.add_argument("--consul-client-cert", default="", help="default $CONSUL_CLIENT_CERT")
    p.add_argument("--consul-client-key", default="", help="default $CONSUL_CLIENT_KEY")
    p.add_argument(
        "--judge-url",
        default=None,
        help="an OpenAI-compatible URL of a model that also rates the answers 0..10: the "
        "metric judge_score, separate from the checks' score (optional)",
    )
    p.add_argument("--judge-model", default=None, help="default: the assistant's model")
    p.add_argument("--mutator-url", default=os.environ.get("PROMPT_EVOLVE_MUTATOR_URL"))
    p.add_argument("--mutator-model", default=None, help="default: the assistant's model")
    p.add_argument("--mutator-max-tokens", type=int, default=None, help="default: openevolve.yaml")
    p.add_argument("--start-prompt", type=Path, default=None, help="default: the app's prompt")
    p.add_argument("--publish-file", type=Path, default=None)
    p.add_argument("--consul-key", default=None, help="e.g. twin/prompts/system")
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--held-out-limit", type=int, default=None)
    p.add_argument("--stage1-cases", type=int, default=4)
    p.add_argument("--stage1-threshold", type=float, default=0.3)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=96, help="longest assistant answer")
    p.add_argument("--case-timeout", type=float, default=180.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--temperature", type=float, default=0.7, help="the mutating model's")
    return p.parse_args(argv)


def consul_config(args: argparse.Namespace) -> DiscoveryConfig:
    """``[twin.discovery]`` as TwinService reads it: options, else ``CONSUL_*`` variables."""
    settings: dict[str, Any] = {
        "mode": "consul",
        "service": args.consul_service or "llm-expert",
        "ca_file": args.consul_ca_file,
        "client_cert_file": args.consul_client_cert,
        "client_key_file": args.consul_client_key,
    }
    if args.consul_addr:
        settings["consul_addr"] = args.consul_addr
    return DiscoveryConfig.model_validate(settings)


def make_target(args: argparse.Namespace) -> Target | None:
    if args.consul_key:
        consul = consul_config(args)
        tls = consul.consul_tls()
        return ConsulTarget(
            args.consul_key,
            consul.resolved_consul_addr(),
            consul.resolved_consul_token(),
            tls.ca_file,
            tls.requests_cert,
        )
    if args.publish_file:
        return FileTarget(args.publish_file)
    return None


def say(text: str) -> None:
    print(f"prompt-evolve: {text}", flush=True)


class Progress:
    """Prints each evaluation (from ``evaluations.jsonl``) and iteration (from OpenEvolve's log)."""

    def __init__(self, settings: RunSettings, log: Path) -> None:
        self._evals = settings.progress_path
        self._log = log
        self._eval_pos = self._evals.stat().st_size if self._evals.exists() else 0
        self._log_pos = 0
        self.best: float | None = None

    def poll(self) -> None:
        if self._evals.exists():
            with self._evals.open(encoding="utf-8") as handle:
                handle.seek(self._eval_pos)
                for line in handle:
                    e = json.loads(line)
                    if e["stage"] == "train":
                        self.best = max(self.best or 0.0, e["score"])
                    what = (
                        f"rejected: {e['rejected']}"
                        if "rejected" in e
                        else (
                            f"score {e['score']:.3f} on {e['cases']} cases in {e['seconds']:.1f}s "
                            f"({e['seconds'] / max(1, e['cases']):.1f}s per case)"
                        )
                    )
                    best = "-" if self.best is None else f"{self.best:.3f}"
                    say(f"evaluation ({e['stage']}): {what} | best so far {best}")
                self._eval_pos = handle.tell()
        if self._log.exists():
            with self._log.open(encoding="utf-8", errors="replace") as handle:
                handle.seek(self._log_pos)
                for line in handle:
                    if " - Iteration " in line and "completed in" in line:
                        say(line.split(" - INFO - ", 1)[-1].strip())
                self._log_pos = handle.tell()


def run_child(settings: RunSettings, start: Path, iterations: int, checkpoint: Path | None) -> None:
    """OpenEvolve in its own process; stopped at once when the evaluator finds a dead endpoint."""
    log = settings.run_dir / "openevolve.log"
    cmd = [sys.executable, "-m", "prompt_engineering.evolve", str(settings.path)]
    cmd += ["--start-prompt", str(start), "--iterations", str(iterations)]
    if checkpoint is not None:
        cmd += ["--checkpoint", str(checkpoint)]
    progress = Progress(settings, log)
    with log.open("a", encoding="utf-8") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            while child.poll() is None:
                time.sleep(1.0)
                progress.poll()
                if settings.fatal_path.exists():
                    child.terminate()
                    try:
                        child.wait(30)
                    except subprocess.TimeoutExpired:
                        child.kill()
                    raise EndpointDown(settings.fatal_path.read_text(encoding="utf-8"))
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    progress.poll()
    if child.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"OpenEvolve exited with {child.returncode}; end of {log}:\n{tail}")


def held_out(prompt: str, settings: RunSettings) -> float:
    cases = select(load_cases(settings.cases_dir), "held_out", settings.held_out_limit)
    result = settings.score(prompt, cases)
    say(f"  held-out: {result.score:.3f} on {len(cases)} cases in {result.seconds:.1f}s")
    return result.score


def evolve(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run (see module doc); returns the report."""
    start = (args.start_prompt or SHIPPED_PROMPT).resolve()
    model, tool_calls = args.assistant_model, False
    if args.consul_service:
        experts = asyncio.run(discover(consul_config(args), args.expert_domain))
        urls = [e.base_url for e in experts]
        model, tool_calls = experts[0].model, experts[0].tool_calls
        say(f"experts from Consul ({args.consul_service}, {args.expert_domain}, {model}): {urls}")
    else:
        urls = args.assistant_url or [os.environ.get("PROMPT_EVOLVE_ASSISTANT_URL") or DEFAULT_URL]
    settings = RunSettings(
        run_dir=args.run_dir.resolve(),
        assistant_urls=urls,
        assistant_model=model,
        assistant_tool_calls=tool_calls,
        mutator_url=args.mutator_url or urls[0],
        mutator_model=args.mutator_model or model,
        judge_url=args.judge_url,
        judge_model=args.judge_model or model,
        mutator_max_tokens=args.mutator_max_tokens,
        max_tokens=args.max_tokens,
        train_limit=args.train_limit,
        held_out_limit=args.held_out_limit,
        stage1_cases=args.stage1_cases,
        stage1_threshold=args.stage1_threshold,
        concurrency=args.concurrency,
        case_timeout_s=args.case_timeout,
        seed=args.seed,
        temperature=args.temperature,
    )
    judge = [settings.judge_url] if settings.judge_url else []
    for url in dict.fromkeys([*settings.assistant_urls, settings.mutator_url, *judge]):
        check_endpoint(url)
    oe_dir = settings.run_dir / "openevolve"
    checkpoint = None
    if args.resume:
        found = report.checkpoints(oe_dir)
        checkpoint = found[-1] if found else None
        say(f"resuming from {checkpoint}" if checkpoint else "no checkpoint yet: starting fresh")
    if checkpoint is None:
        shutil.rmtree(oe_dir, ignore_errors=True)
        for stale in (settings.progress_path, settings.run_dir / "openevolve.log"):
            stale.unlink(missing_ok=True)
    settings.fatal_path.unlink(missing_ok=True)
    settings.save()
    say(f"evolving {start} for {args.iterations} iterations in {settings.run_dir}")
    run_child(settings, start, args.iterations, checkpoint)

    last = report.checkpoints(oe_dir)[-1]
    rows = report.history(last)
    info = json.loads((last / "best_program_info.json").read_text(encoding="utf-8"))
    best_text = (last / "best_program.md").read_text(encoding="utf-8").strip()
    start_text = start.read_text(encoding="utf-8").strip()
    baseline_train = next((r["score"] for r in rows if r["parent"] is None), 0.0)
    best_train = float(info["metrics"].get("combined_score", 0.0))
    target = make_target(args)
    read = target.current() if target else None
    current_text = (read.text if read and read.text else None) or start_text

    say("scoring on the held-out cases (never used in training)")
    say(" starting prompt:")
    baseline_held = held_out(start_text, settings)
    if best_text == start_text:
        best_held = baseline_held
    else:
        say(" best prompt:")
        best_held = held_out(best_text, settings)
    if current_text == start_text:
        current_held = baseline_held
    elif current_text == best_text:
        current_held = best_held
    else:
        say(" currently published prompt:")
        current_held = held_out(current_text, settings)

    published, reason = False, ""
    if target is None or read is None:
        reason = "no target given (--consul-key or --publish-file)"
    elif best_text == current_text:
        reason = "the best prompt is the current one"
    elif best_held <= current_held:
        reason = f"held-out {best_held:.3f} does not beat the current prompt's {current_held:.3f}"
    else:
        meta = {
            "version": read.version + 1,
            "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "held_out_score": best_held,
            "previous_held_out_score": current_held,
            "train_score": best_train,
            "iterations": rows[-1]["iteration"] if rows else 0,
            "program_id": info.get("id"),
        }
        published = target.publish(best_text, meta, read)
        reason = (
            f"held-out {best_held:.3f} beats {current_held:.3f}: version {meta['version']}"
            if published
            else "the target changed since this run read it (another run published first)"
        )
    result = {
        "run_dir": str(settings.run_dir),
        "start_prompt": str(start),
        "iterations": max((r["iteration"] for r in rows), default=0),
        "scores": {
            "baseline": {"train": baseline_train, "held_out": baseline_held},
            "best": {"train": best_train, "held_out": best_held},
            "current_held_out": current_held,
        },
        "best_prompt": best_text,
        "target": target.name if target else None,
        "published": published,
        "reason": reason,
    }
    json_path, png = report.write(result, rows, settings.run_dir)
    say(f"            {'train':>8} {'held-out':>9}")
    say(f"  baseline  {baseline_train:8.3f} {baseline_held:9.3f}")
    say(f"  best      {best_train:8.3f} {best_held:9.3f}")
    say(
        ("published to " + str(result["target"]) + ": " if published else "not published: ")
        + reason
    )
    say(f"report: {json_path} and {png}")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    try:
        evolve(args)
    except EndpointDown as exc:
        say(f"stopped: {exc}")
        return 2
    except RuntimeError as exc:
        say(f"failed: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
