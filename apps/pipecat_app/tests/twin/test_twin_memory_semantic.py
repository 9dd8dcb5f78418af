"""Recall by meaning: sentence vectors in sqlite-vec, fused with BM25; durable under kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import apsw
import numpy as np
import pytest
import sqlite_vec
from helpers.routing_suite import example_experts

from pipecat_app.config import ConfigError, load_config
from pipecat_app.twin.config import MemoryConfig, RoutingConfig, TwinConfig
from pipecat_app.twin.embedding import SENTENCE_MODEL, sentence_encoder
from pipecat_app.twin.memory import MemoryStore, TurnMemory
from pipecat_app.twin.router import Router
from pipecat_app.twin.service import TwinLLMProcessor, TwinService

DOG = "I have a labrador called Rex"
OTHERS = [
    "My sister Alice lives in Lisbon",
    "The garage code is 4711",
    "I drink my coffee black",
    "The dentist appointment is on Friday",
]


def semantic_store(path: Path) -> MemoryStore:
    store = MemoryStore(path, encoder=sentence_encoder)
    assert store.open()
    return store


def raw(path: Path) -> apsw.Connection:
    """A second connection with sqlite-vec, as the store's (apsw: the same SQLite library)."""
    db = apsw.Connection(str(path))
    db.enable_load_extension(True)
    db.load_extension(sqlite_vec.loadable_path())
    return db


def test_my_dog_finds_the_labrador_by_meaning_where_bm25_finds_nothing(tmp_path):
    store = semantic_store(tmp_path / "m.sqlite3")
    for text in [DOG, *OTHERS]:
        store.remember("ana", text)
    assert store.wait_indexed()
    question = "What do you know about my dog?"
    assert store.recall("ana", question) == []
    vector = store.embed_query(question)
    hybrid = store.recall("ana", question, query_vector=vector)
    assert hybrid[0].text == DOG
    # Unrelated memories stay out (below min_similarity), so the prompt is not padded.
    assert [i.text for i in hybrid] == [DOG]
    # Another user's memories are not searched by meaning either.
    assert store.recall("bob", question, query_vector=vector) == []


def test_a_memory_in_both_lists_outranks_one_found_by_words_alone(tmp_path):
    store = semantic_store(tmp_path / "m.sqlite3")
    store.remember("ana", "Rex the labrador loves the beach")
    store.remember("ana", "The beach umbrella is in the garage")
    assert store.wait_indexed()
    question = "Where does my dog like to go, the beach?"
    by_words = store.recall("ana", question)
    assert {i.text for i in by_words} == {
        "Rex the labrador loves the beach",
        "The beach umbrella is in the garage",
    }
    hybrid = store.recall("ana", question, query_vector=store.embed_query(question))
    assert hybrid[0].text == "Rex the labrador loves the beach"


def test_memories_written_before_the_vectors_exist_are_recalled_by_words_then_by_meaning(
    tmp_path,
):
    path = tmp_path / "m.sqlite3"
    plain = MemoryStore(path)  # no encoder: no vectors are written
    assert plain.open()
    plain.remember("ana", DOG)
    plain.close()
    store = semantic_store(path)
    # Right after opening, before the thread has embedded anything: BM25 still recalls it.
    assert store.recall("ana", "labrador")[0].text == DOG
    assert store.wait_indexed()
    question = "tell me about my dog"
    assert store.recall("ana", question, query_vector=store.embed_query(question))[0].text == DOG


def test_turn_memory_recalls_by_meaning_once_the_model_is_loaded(tmp_path):
    config = MemoryConfig(path=tmp_path / "m.sqlite3")
    store = MemoryStore.from_config(config)
    turn = TurnMemory(store, config, "ana")
    turn.open()
    try:
        store.remember("ana", DOG)
        assert store.wait_indexed()
        assert DOG in turn.recalled("Do you remember my dog's name?")
    finally:
        turn.close()


class _Directions:
    """An encoder of known vectors: "old ..." near QUERY, "new ..." less near, the rest far."""

    model = "test-directions"
    dimensions = 384

    def __init__(self) -> None:
        rng = np.random.default_rng(3)
        signs = rng.choice([-1.0, 1.0], size=self.dimensions)
        self.query = (signs / np.sqrt(self.dimensions)).astype(np.float32)
        self._old = self._flipped(5)  # cosine 0.97 with the query, 5 bits apart
        self._new = self._flipped(60)  # cosine 0.69, 60 bits apart
        self._rng = rng

    def _flipped(self, count: int) -> np.ndarray:
        vector = self.query.copy()
        vector[:count] *= -1
        return vector

    def encode(self, texts):
        rows = []
        for text in texts:
            if text.startswith("old"):
                rows.append(self._old)
            elif text.startswith("new"):
                rows.append(self._new)
            else:
                far = self._rng.choice([-1.0, 1.0], size=self.dimensions)
                rows.append((far / np.sqrt(self.dimensions)).astype(np.float32))
        return np.stack(rows)


@pytest.mark.slow
def test_a_recent_memory_is_recalled_by_meaning_past_many_older_nearer_ones(tmp_path):
    # 8,192 year-old episodes nearer to the question than the one from today,
    # in older id blocks of the window: one k over the window is filled by
    # them; each block with its own k finds today's (and recency ranks it first).
    encoder = _Directions()
    store = MemoryStore(tmp_path / "m.sqlite3", encoder=lambda: encoder)
    assert store.open()
    try:
        now = time.time()
        year_ago = now - 365 * 86400
        store.remember_many(
            ("ana", "episode", "user", f"old note {i}", year_ago + i) for i in range(8192)
        )
        store.remember_many(
            ("ana", "episode", "user", f"other note {i}", now - 60) for i in range(10)
        )
        store.remember("ana", "new note from today", kind="episode", role="user", at=now)
        assert store.wait_indexed(timeout=300)
        found = store.recall("ana", "?", query_vector=encoder.query, lexical=False, now=now)
        assert found[0].text == "new note from today", [i.text for i in found[:3]]
    finally:
        store.close()


def test_routing_and_recall_share_the_turns_one_embedding(tmp_path):
    embedded: list[list[str]] = []

    class Counting:
        model = SENTENCE_MODEL
        dimensions = 384

        def encode(self, texts):
            embedded.append(list(texts))
            return sentence_encoder().encode(texts)

    config = MemoryConfig(path=tmp_path / "m.sqlite3")
    store = MemoryStore(config.path, encoder=Counting)
    turn = TurnMemory(store, config, "ana")
    turn.open()
    try:
        store.remember("ana", DOG)
        assert store.wait_indexed()
        experts = example_experts()
        router = Router(RoutingConfig(), embedder=store)
        assert router.prepare(experts) == "embedding"
        embedded.clear()
        question = "Do you remember my dog's name?"
        assert DOG in turn.recalled(question)  # what the turn's system message gets
        decision = router.route(question, experts)
        assert decision.encoder == "embedding"
        assert embedded == [[question]]
    finally:
        turn.close()


def test_forget_deletes_the_vector_with_its_text(tmp_path):
    path = tmp_path / "m.sqlite3"
    store = semantic_store(path)
    store.remember("ana", DOG)
    store.remember("ana", OTHERS[0])
    assert store.wait_indexed()
    assert store.forget("ana", "labrador Rex") == 1
    question = "my dog"
    assert DOG not in [
        i.text for i in store.recall("ana", question, query_vector=store.embed_query(question))
    ]
    store.close()
    db = raw(path)
    assert db.execute("SELECT count(*) FROM memories_vec").fetchone()[0] == 1


def test_vectors_of_another_model_are_dropped_and_rebuilt(tmp_path):
    path = tmp_path / "m.sqlite3"
    store = semantic_store(path)
    store.remember("ana", DOG)
    assert store.wait_indexed()
    store.close()
    db = raw(path)
    db.execute("UPDATE memory_vectors_state SET model = 'some-older-model'")
    db.close()
    store = semantic_store(path)
    assert store.wait_indexed()
    store.close()
    db = raw(path)
    assert db.execute("SELECT model FROM memory_vectors_state").fetchall() == [(SENTENCE_MODEL,)]
    assert db.execute("SELECT count(*) FROM memories_unembedded").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM memories_vec").fetchone()[0] == 1


# A writer process: remembers numbered memories (its background thread
# embedding them) and forgets older ones, which have their vectors by then,
# until it is killed.
WRITER = textwrap.dedent(
    """
    import sys
    import time
    from pipecat_app.twin.embedding import sentence_encoder
    from pipecat_app.twin.memory import MemoryStore

    store = MemoryStore(sys.argv[1], encoder=sentence_encoder)
    assert store.open()
    while store.encoder is None:
        time.sleep(0.01)
    n = 0
    while True:
        n += 1
        store.remember("ana", f"memory {n} about the dog and the garden, whole {n}")
        if n % 7 == 0:
            store.forget("ana", f"memory {n // 7 + 10} whole")  # that one memory
        time.sleep(0.002)
        if n == 40:
            print("ready", flush=True)
    """
)


@pytest.mark.parametrize("round_", range(3))
def test_kill_9_while_writing_leaves_whole_rows_and_no_vector_without_its_text(tmp_path, round_):
    path = tmp_path / "m.sqlite3"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "LOGURU_LEVEL": "WARNING"},
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        # Kill once vectors are being written too, at a different moment each round,
        # and once more than 40 memories are committed (a forget only ever follows
        # a remember, so 42 rows cannot fall below 40 again): what was committed
        # must survive the kill, however slowly a loaded machine wrote it.
        db = raw(path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with db:
                tables = db.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'memories_vec'"
                ).fetchone()[0]
                if (
                    tables
                    and db.execute("SELECT count(*) FROM memories_vec").fetchone()[0] > 20
                    and db.execute("SELECT count(*) FROM memories").fetchone()[0] >= 42
                ):
                    break
            time.sleep(0.05)
        db.close()
        time.sleep(0.05 * round_)
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=10) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()

    store = MemoryStore(path)
    assert store.open(), store.error  # opens, and passes quick_check
    store.close()
    db = raw(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.execute("INSERT INTO memories_fts (memories_fts) VALUES ('integrity-check')")
    texts = [t for (t,) in db.execute("SELECT text FROM memories")]
    assert len(texts) >= 40
    for text in texts:  # no partial row: each text as it was written
        n = text.split()[1]
        assert text == f"memory {n} about the dog and the garden, whole {n}"
    orphans = db.execute(
        "SELECT count(*) FROM memories_vec AS v LEFT JOIN memories AS m ON m.id = v.rowid "
        "WHERE m.id IS NULL"
    ).fetchone()[0]
    assert orphans == 0
    vectors = db.execute("SELECT count(*) FROM memories_vec").fetchone()[0]
    assert vectors > 20
    # Every memory has its vector or waits for one (embedded on reopening), and no more.
    lost = db.execute(
        "SELECT count(*) FROM memories AS m WHERE NOT EXISTS "
        "(SELECT 1 FROM memories_vec AS v WHERE v.rowid = m.id) AND NOT EXISTS "
        "(SELECT 1 FROM memories_unembedded AS u WHERE u.id = m.id)"
    ).fetchone()[0]
    assert lost == 0
    waiting_for_nothing = db.execute(
        "SELECT count(*) FROM memories_unembedded AS u LEFT JOIN memories AS m ON m.id = u.id "
        "WHERE m.id IS NULL"
    ).fetchone()[0]
    assert waiting_for_nothing == 0
    db.close()
    again = semantic_store(path)
    assert again.wait_indexed()
    question = "the dog in the garden"
    assert again.recall("ana", question, query_vector=again.embed_query(question), lexical=False)
    again.close()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("semantic_window = 10", "greater than or equal to 1000"),
        ("semantic_candidates = 0", "greater than or equal to 1"),
        ("min_similarity = 1.5", "less than or equal to 1"),
        ("embedding_threads = 0", "greater than or equal to 1"),
    ],
)
def test_a_memory_setting_out_of_range_is_refused_naming_the_key(tmp_path, setting, message):
    config = tmp_path / "app.toml"
    config.write_text(f"[twin.memory]\n{setting}\n")
    key = setting.split(" = ")[0]
    with pytest.raises(ConfigError, match=rf"twin\.memory\.{key}: Input should be {message}"):
        load_config(config)


@pytest.mark.anyio
async def test_twin_service_recalls_by_meaning_into_the_turns_context(tmp_path):
    config = TwinConfig.model_validate(
        {
            "memory": {"path": str(tmp_path / "m.sqlite3")},
            "experts": [{"name": "a", "domain": "general", "base_url": "http://127.0.0.1:9/v1"}],
        }
    )
    twin = TwinService(config)
    (turn_stage,) = twin.processors()
    assert isinstance(turn_stage, TwinLLMProcessor)
    await twin.start()
    try:
        twin.memory.remember(config.user_id, DOG)
        assert twin.memory.wait_indexed()
        assert DOG in turn_stage.recalled("What do you know about my dog?")
    finally:
        await twin.stop()
