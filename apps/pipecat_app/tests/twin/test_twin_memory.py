"""Memory: SQLite WAL store, FTS5 recall weighted by recency, token budget, failures."""

from __future__ import annotations

import random
import time

import apsw
import pytest

from pipecat_app.metrics import MEMORY_ERRORS
from pipecat_app.twin.memory import (
    MemoryItem,
    MemoryStore,
    estimate_tokens,
    fit_to_budget,
    format_item,
    render_block,
)

DAY = 86400.0


def open_store(path) -> MemoryStore:
    store = MemoryStore(path)
    assert store.open()
    return store


def test_database_is_in_wal_mode(tmp_path):
    store = open_store(tmp_path / "m.sqlite3")
    store.close()
    # apsw, as the store: two SQLite libraries in one process do not see each other's locks.
    mode = apsw.Connection(str(tmp_path / "m.sqlite3")).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_remembered_fact_is_recalled_by_a_related_question(tmp_path):
    store = open_store(tmp_path / "m.sqlite3")
    store.remember("ana", "My sister Alice lives in Lisbon")
    store.remember("ana", "I drink my coffee black")
    items = store.recall("ana", "Where does my sister live?")
    assert [i.text for i in items] == ["My sister Alice lives in Lisbon"]


def test_memories_of_another_user_are_not_recalled(tmp_path):
    store = open_store(tmp_path / "m.sqlite3")
    store.remember("ana", "The garage code is 4711")
    assert store.recall("bob", "what is the garage code") == []
    assert store.recall("ana", "what is the garage code")


def test_recent_memory_outranks_an_equally_relevant_old_one(tmp_path):
    store = open_store(tmp_path / "m.sqlite3")
    now = time.time()
    # The old one matches better on text alone (the words twice) and was stored later.
    store.remember("ana", "favourite band is Massive Attack", at=now - 1 * DAY)
    store.remember("ana", "favourite band, my favourite band: Portishead", at=now - 200 * DAY)
    items = store.recall("ana", "what is my favourite band", now=now)
    assert [i.text for i in items][:2] == [
        "favourite band is Massive Attack",
        "favourite band, my favourite band: Portishead",
    ]


def test_memory_survives_a_restart(tmp_path):
    store = open_store(tmp_path / "m.sqlite3")
    store.remember("ana", "The wifi password is on the fridge")
    store.close()
    again = open_store(tmp_path / "m.sqlite3")
    assert again.recall("ana", "wifi password")[0].text == "The wifi password is on the fridge"


def test_forget_deletes_only_memories_with_every_word(tmp_path):
    store = open_store(tmp_path / "m.sqlite3")
    store.remember("ana", "Alice lives in Lisbon")
    store.remember("ana", "Alice likes jazz")
    assert store.forget("ana", "Alice Lisbon") == 1
    assert [i.text for i in store.recall("ana", "Alice")] == ["Alice likes jazz"]
    assert store.recall("ana", "Lisbon") == []


def test_query_with_fts_syntax_characters_is_searched_as_words(tmp_path):
    store = open_store(tmp_path / "m.sqlite3")
    store.remember("ana", "the NEAR( operator AND quotes")
    assert store.recall("ana", 'what about "NEAR(" AND * ^ -operator?')


def test_budget_keeps_best_items_that_fit(tmp_path):
    items = [
        MemoryItem(1, "fact", "", "x" * 400, 0.0, 3.0),  # ~102 tokens: does not fit
        MemoryItem(2, "fact", "", "short fact one", 0.0, 2.0),
        MemoryItem(3, "fact", "", "short fact two", 0.0, 1.0),
    ]
    kept = fit_to_budget(items, budget=20)
    assert [i.id for i in kept] == [2, 3]
    assert sum(estimate_tokens(format_item(i)) for i in kept) <= 20
    assert fit_to_budget(items, budget=0) == []
    assert "short fact one" in render_block(kept)
    assert render_block([]) == ""


def test_a_text_longer_than_max_item_chars_is_stored_cut_to_it(tmp_path):
    store = MemoryStore(tmp_path / "m.sqlite3", max_item_chars=20)
    assert store.open()
    store.remember("ana", "Ana's bike is green and has a basket", kind="fact")
    store.remember_many([("ana", "episode", "user", "lighthouse " * 1000, time.time())])
    texts = sorted(i.text for i in store.recall("ana", "bike lighthouse"))
    assert texts == ["Ana's bike is green", "lighthouse lighthous"]


def test_corrupt_database_is_reported_and_memory_is_off(tmp_path):
    path = tmp_path / "m.sqlite3"
    path.write_bytes(b"this is not a database at all" * 100)
    before = MEMORY_ERRORS._value.get()
    store = MemoryStore(path)
    assert store.open() is False
    assert store.available is False
    assert "not a database" in (store.error or "")
    assert MEMORY_ERRORS._value.get() == before + 1
    # The conversation goes on: calls return nothing instead of raising.
    assert store.recall("ana", "anything at all") == []
    assert store.remember("ana", "a fact") is None
    assert store.forget("ana", "fact") == 0


def test_locked_database_skips_the_call_and_counts_an_error(tmp_path):
    path = tmp_path / "m.sqlite3"
    store = open_store(path)
    blocker = apsw.Connection(str(path))
    blocker.execute("BEGIN EXCLUSIVE")
    before = MEMORY_ERRORS._value.get()
    try:
        assert store.remember("ana", "written while locked") is None
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert MEMORY_ERRORS._value.get() == before + 1
    # A lock is transient: the store is still usable afterwards.
    assert store.available
    assert store.remember("ana", "written after the lock") is not None


@pytest.mark.slow
def test_recall_stays_fast_with_100000_memories(tmp_path):
    store = open_store(tmp_path / "m.sqlite3")
    rng = random.Random(7)
    vocabulary = [f"word{i}" for i in range(5000)]
    now = time.time()
    rows = [
        ("ana", "episode", "user", " ".join(rng.choices(vocabulary, k=14)), now - (100000 - i) * 60)
        for i in range(100000)
    ]
    store.remember_many(rows)
    store.remember("ana", "My daughter's school is Escola Azul")
    assert store.count("ana") == 100001
    timings = []
    for question in ["which school does my daughter go to", "word17 word99 word4000", "word1"]:
        start = time.perf_counter()
        items = store.recall("ana", question)
        timings.append(time.perf_counter() - start)
        assert items
    assert store.recall("ana", "daughter school")[0].text == "My daughter's school is Escola Azul"
    # Generous for a shared CI machine; bench_twin.py reports the real p50/p99.
    assert max(timings) < 0.1, timings
    # CPU time, which a loaded machine inflates far less: FTS5's newest matches
    # are the outer loop, each memory found by its id (about 1 ms here); walking
    # all of the user's memories by index and probing the matches took 10 ms.
    spent = []
    for _ in range(5):
        start = time.thread_time()
        store.recall("ana", "word1")
        spent.append(time.thread_time() - start)
    assert sorted(spent)[2] < 0.004, spent
