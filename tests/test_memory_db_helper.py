"""Tests read the assistant's memory database only through the app's own SQLite (apsw).

See ``helpers.memory_db``: a second copy of SQLite in the process (Python's
``sqlite3``) tears the write-ahead log out from under the app's connection.
"""

from __future__ import annotations

from pathlib import Path

import apsw
from helpers.memory_db import query

REPO = Path(__file__).resolve().parents[1]
TEST_FOLDERS = ["tests", "apps/pipecat_app/tests", "apps/vision", "prompt_engineering/tests"]


def test_reading_leaves_the_apps_write_ahead_log_in_place(tmp_path):
    path = tmp_path / "memory.sqlite3"
    app = apsw.Connection(str(path))
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("CREATE TABLE memories(text)")
    with app:
        app.execute("INSERT INTO memories VALUES ('I have a labrador called Rex')")
    assert query(path, "SELECT text FROM memories") == [("I have a labrador called Rex",)]
    # Python's sqlite3 here deletes both files as the "last" connection, while
    # the app's is still open.
    assert Path(f"{path}-wal").exists()
    assert Path(f"{path}-shm").exists()
    with app:
        app.execute("INSERT INTO memories VALUES ('and a cat')")
    assert len(query(path, "SELECT text FROM memories")) == 2
    app.close()


def test_no_test_imports_pythons_sqlite3():
    found = [
        str(path.relative_to(REPO))
        for folder in TEST_FOLDERS
        for path in (REPO / folder).rglob("*.py")
        if ".venv" not in path.parts
        and any(
            line.strip() in {"import sqlite3", "from sqlite3 import *"}
            or line.startswith("from sqlite3 ")
            for line in path.read_text().splitlines()
        )
    ]
    assert not found, f"read the memory database with helpers.memory_db.query: {found}"
