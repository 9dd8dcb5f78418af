"""Is a candidate a system prompt, or the mutating model's thinking about one?

OpenEvolve's full-rewrite parser returns the model's whole reply when it finds
no fenced block, so the reply's reasoning ("Okay, let me rewrite...", the
task's own headings) can become the candidate. Such a candidate is rejected
before any case runs: score 0, with the reason as an artifact.
"""

from __future__ import annotations

import re

MIN_CHARS = 40
MAX_CHARS = 4000

_THINKING = [
    (re.compile(r"</?think>|<\|im_(start|end)\|>", re.I), "model control tokens or <think> tags"),
    (re.compile(r"```"), "a fenced block (the reply around the prompt, not the prompt)"),
    (
        re.compile(
            r"^\s*(okay|ok|sure|alright|certainly|let me|let's|i will|i'll|i need to|"
            r"here is|here's|first,|to improve|the (current|original|new) (prompt|program))\b",
            re.I,
        ),
        "it opens as a reply to the task, not as a prompt",
    ),
    (
        re.compile(
            r"\b(fitness score|evolve-block|feature coordinates|rewritten program|"
            r"current program|program evolution history|# task|improved version of the prompt)\b",
            re.I,
        ),
        "it talks about the evolution task itself",
    ),
]


def rejection(text: str) -> str | None:
    """Why ``text`` is not a system prompt, or None when it may be one."""
    stripped = text.strip()
    if len(stripped) < MIN_CHARS:
        return f"too short to be a system prompt ({len(stripped)} characters, minimum {MIN_CHARS})"
    if len(stripped) > MAX_CHARS:
        return f"too long for a voice system prompt ({len(stripped)} characters, max {MAX_CHARS})"
    for pattern, why in _THINKING:
        if match := pattern.search(stripped):
            return f"looks like the model's thinking, not a prompt: {why} ({match.group(0)!r})"
    return None
