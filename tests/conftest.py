"""Shared pytest set-up for tests/: makes ``helpers`` importable from every subfolder.

Test files import the shared helpers as ``from helpers.<module> import ...``
(tests/helpers/); subfolders such as tests/jobs/ or tests/live/ need this
directory on ``sys.path`` for that, whatever pytest's import mode.
"""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
