"""tests/pxe: the ``metal`` tests (a full install, about an hour) run only when asked for.

``make pxe-tests`` selects ``-m "not live"``, which a metal test also
matches; so they are deselected unless the ``-m`` expression names ``metal``
(``make test-metal`` runs ``-m metal``).
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "metal" in str(config.getoption("markexpr") or ""):
        return
    metal = [item for item in items if item.get_closest_marker("metal") is not None]
    if metal:
        config.hook.pytest_deselected(items=metal)
        items[:] = [item for item in items if item.get_closest_marker("metal") is None]
