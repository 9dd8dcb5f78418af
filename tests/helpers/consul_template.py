"""Render the consul-template actions the job templates under ``jobs/`` use, as Nomad would.

The job templates are kept to a few actions (``env``, ``keyOrDefault``,
``with nomadVar``) so that tests can render them without consul-template;
:func:`render_consul_template` fails a test on any other action.
"""

from __future__ import annotations

import re

_CT_ACTION = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_CT_WITH_VAR = re.compile(
    r'\{\{\s*with nomadVar \(env "([^"]+)"\)\s*\}\}(.*?)\{\{\s*end\s*\}\}', re.DOTALL
)


def render_consul_template(
    data: str,
    env: dict[str, str],
    kv: dict[str, str],
    variables: dict[str, dict[str, str]] | None = None,
) -> str:
    """Render the consul-template actions the job's templates use, as Nomad would.

    ``{{ env "NAME" }}`` is the task's environment; ``{{ keyOrDefault (env
    "NAME") "default" }}`` is the Consul KV value at the key that variable
    names; ``{{ with nomadVar (env "NAME") }}...{{ .item }}...{{ end }}`` reads
    the items of the Nomad Variable at the path that variable names
    (``variables``: path -> items; a missing variable or item fails, where
    Nomad would wait for it or write "<no value>"). Any other action fails the
    test: the job's templates are kept to these so they can be rendered here
    without consul-template.
    """

    def with_variable(match: re.Match[str]) -> str:
        items = (variables or {})[env[match.group(1)]]

        def item(found: re.Match[str]) -> str:
            if name := re.fullmatch(r"\.(\w+)", found.group(1)):
                return items[name.group(1)]
            raise AssertionError(
                f"action inside nomadVar this test cannot render: {found.group(0)}"
            )

        return _CT_ACTION.sub(item, match.group(2))

    def action(match: re.Match[str]) -> str:
        expr = match.group(1)
        if found := re.fullmatch(r'env "([^"]+)"', expr):
            return env[found.group(1)]
        if found := re.fullmatch(r'keyOrDefault \(env "([^"]+)"\) "([^"]*)"', expr):
            return kv.get(env[found.group(1)], found.group(2))
        raise AssertionError(f"consul-template action this test cannot render: {match.group(0)}")

    return _CT_ACTION.sub(action, _CT_WITH_VAR.sub(with_variable, data))
