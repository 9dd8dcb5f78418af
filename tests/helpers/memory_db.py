"""Read the assistant's memory database from a test, through the app's own SQLite.

The app opens its database with apsw, which carries its own copy of SQLite.
A second copy in the same process (Python's ``sqlite3``) breaks SQLite's
locking: POSIX locks belong to the process, so when one copy closes the file
it drops the other's locks, and a copy that believes it is the last
connection may checkpoint and shrink the WAL index the other has mapped. The
app's background indexer then dies of a bus error, and the test process with
it (seen in CI: ``prepare_vectors`` while a test read the database with
``sqlite3``). SQLite's documentation warns against linking two copies for
this reason. Tests therefore read through apsw, and close what they open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every row ``sql`` gives on the database at ``path``."""
    db = apsw.Connection(str(path))
    try:
        return [tuple(row) for row in db.execute(sql, params)]
    finally:
        db.close()
