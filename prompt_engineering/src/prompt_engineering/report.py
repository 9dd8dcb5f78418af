"""A run's report: JSON, and a PNG plot of the score by iteration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: write files only
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator


def checkpoints(openevolve_dir: Path) -> list[Path]:
    """OpenEvolve's checkpoint directories, oldest first."""
    found = (openevolve_dir / "checkpoints").glob("checkpoint_*")
    return sorted(found, key=lambda p: int(p.name.rpartition("_")[2]))


def history(checkpoint: Path) -> list[dict[str, Any]]:
    """Every program in a checkpoint: iteration, score, words, and whether it was rejected."""
    rows = []
    for path in (checkpoint / "programs").glob("*.json"):
        program = json.loads(path.read_text(encoding="utf-8"))
        metrics = program.get("metrics") or {}
        rows.append(
            {
                "id": program["id"],
                "iteration": int(program.get("iteration_found", 0)),
                "score": float(metrics.get("combined_score", 0.0)),
                "prompt_words": metrics.get("prompt_words"),
                "parent": program.get("parent_id"),
            }
        )
    return sorted(rows, key=lambda r: (r["iteration"], r["id"]))


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Each candidate's training score by iteration, and the best so far."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    xs = [r["iteration"] for r in rows]
    ys = [r["score"] for r in rows]
    ax.scatter(xs, ys, s=18, label="candidate (training score)")
    best, best_xs, best_ys = 0.0, [], []
    for r in rows:
        best = max(best, r["score"])
        best_xs.append(r["iteration"])
        best_ys.append(best)
    ax.step(best_xs, best_ys, where="post", color="tab:orange", label="best so far")
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("combined score")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write(report: dict[str, Any], rows: list[dict[str, Any]], run_dir: Path) -> tuple[Path, Path]:
    """``report.json`` and ``scores.png`` in ``run_dir``."""
    json_path = run_dir / "report.json"
    json_path.write_text(json.dumps({**report, "history": rows}, indent=2), encoding="utf-8")
    png = plot(rows, run_dir / "scores.png", "TwinService system prompt: score by iteration")
    return json_path, png
