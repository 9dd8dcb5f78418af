"""Long-term memory: episodic turns and semantic facts per user in SQLite.

The store is one SQLite file in WAL mode (a Nomad host volume in the cluster),
with an FTS5 index over the text and, with ``twin.memory.semantic``, a
sentence embedding of each memory in a sqlite-vec ``vec0`` table. Recall
ranks full-text matches by BM25 and, given the turn's query vector, the
nearest memories by cosine similarity, each weighted by recency (exponential
decay with a configurable half-life), and fuses the two lists by reciprocal
rank (:func:`fuse`). :func:`fit_to_budget` then keeps the best items that fit
the turn's token budget. :class:`TurnMemory` is what one conversation does
with it: recall for each turn's system message, and each turn stored.

The database is opened with apsw, not the standard library's ``sqlite3``:
apsw carries its own SQLite and loads extensions on every Python (the
project's venv Python has a ``sqlite3`` that cannot), so tests and nodes load
sqlite-vec the same way.

Vectors are written off the turn path: a background thread
(:class:`_Indexer`) loads the encoder, embeds the memories that wait for a
vector (``memories_unembedded``, filled by a trigger in the transaction that
writes the memory) and writes each batch in one transaction that also takes
them off that list. A vector row is inserted only while its memory exists
(``INSERT ... SELECT ... WHERE id = ?``) and deleted with it (a trigger), so
a kill at any moment leaves no vector without its text, and no memory that
neither has a vector nor waits for one. Memories without a vector
(written before the model loaded, or while the thread catches up) are still
recalled by BM25.

Memory is a convenience, never a reason for the conversation to stop: a
corrupt database disables the store (logged once, ``MEMORY_ERRORS``), a
locked or failing one makes that one call return nothing (logged,
``MEMORY_ERRORS``), and the turn goes on without memory.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import apsw
import numpy as np
from loguru import logger

from pipecat_app.metrics import MEMORY_ERRORS
from pipecat_app.twin.config import MemoryConfig
from pipecat_app.twin.embedding import Embedder

Kind = Literal["episode", "fact"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id      INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('episode', 'fact')),
    role    TEXT NOT NULL DEFAULT '',
    text    TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_user_created ON memories (user_id, created);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5 (
    text, content='memories', content_rowid='id', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS memories_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TABLE IF NOT EXISTS memory_vectors_state (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    model TEXT NOT NULL
);
"""

# The vectors: binary-quantised for sqlite-vec's brute-force KNN (hamming
# distance over 48 bytes a memory), with the float vector beside it for the
# exact cosine of the candidates. Made once the encoder (and so its size) is
# known. Partitioned by user, kind and id block (``_BLOCK`` ids each; all
# facts in block 0), so a turn compares every fact of its user but only the
# episodes of recent blocks. Each partition costs sqlite-vec a scan of its own.
_VECTOR_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS memories_vec USING vec0 (
    user_id TEXT PARTITION KEY, kind TEXT PARTITION KEY, block INTEGER PARTITION KEY,
    embedding BIT[{dimensions}], +vector BLOB
);
CREATE TRIGGER IF NOT EXISTS memories_vec_ad AFTER DELETE ON memories BEGIN
    DELETE FROM memories_vec WHERE rowid = old.id;
    DELETE FROM memories_unembedded WHERE id = old.id;
END;
CREATE TABLE IF NOT EXISTS memories_unembedded (id INTEGER PRIMARY KEY);
CREATE TRIGGER IF NOT EXISTS memories_unembedded_ai AFTER INSERT ON memories BEGIN
    INSERT OR IGNORE INTO memories_unembedded (id) VALUES (new.id);
END;
"""
# The memories that wait for a vector are listed in the same transaction that
# writes them (a trigger), not found by comparing ids: SQLite hands the id of
# a deleted newest row out again.
_DROP_VECTORS = """
DROP TRIGGER IF EXISTS memories_vec_ad;
DROP TRIGGER IF EXISTS memories_unembedded_ai;
DROP TABLE IF EXISTS memories_vec;
DROP TABLE IF EXISTS memories_unembedded;
DELETE FROM memory_vectors_state;
"""
_BLOCK = 4096
# Reciprocal rank fusion's constant (Cormack et al.; also Elasticsearch's default).
_RRF_K = 60

# Words too common to say anything about a memory; leaving them out keeps
# the FTS query selective (and fast) on large stores.
_STOPWORDS = frozenset(
    re.split(
        r"\s+",
        """
    a about above after again all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    out over own same she should so some such than that the their theirs them then there
    these they this those through to too under until up very was we were what when where
    which while who whom why will with would you your yours yourself please tell know
    remember recall forget said say like think want get got okay ok yes hi hello hey
""".strip(),
    )
)
_WORD = re.compile(r"[\w']+", re.UNICODE)
_CHARS_PER_TOKEN = 4
_MAX_ITEM_CHARS = MemoryConfig.model_fields["max_item_chars"].default
_FATAL = (apsw.CorruptError, apsw.NotADBError)


@dataclass(frozen=True)
class MemoryItem:
    """One recalled memory, with its combined relevance/recency score."""

    id: int
    kind: Kind
    role: str
    text: str
    created: float
    score: float


def estimate_tokens(text: str) -> int:
    """Cheap token estimate (characters / 4, at least 1) used for the memory budget."""
    return max(1, math.ceil(len(text) / _CHARS_PER_TOKEN))


def format_item(item: MemoryItem) -> str:
    """One line of the memory block put into the context."""
    if item.kind == "fact":
        return f"- {item.text}"
    day = time.strftime("%Y-%m-%d", time.gmtime(item.created))
    who = "the user" if item.role == "user" else "you"
    return f"- ({day}) {who} said: {item.text}"


def fit_to_budget(items: Sequence[MemoryItem], budget: int) -> list[MemoryItem]:
    """Keep the best-scored items whose formatted lines fit in ``budget`` tokens.

    Items are taken in order (best first); one that does not fit is skipped and
    smaller later ones may still fit.
    """
    kept: list[MemoryItem] = []
    used = 0
    for item in items:
        cost = estimate_tokens(format_item(item))
        if used + cost <= budget:
            kept.append(item)
            used += cost
    return kept


def render_block(items: Sequence[MemoryItem]) -> str:
    """The memory block appended to the system prompt (empty when nothing fits)."""
    if not items:
        return ""
    lines = "\n".join(format_item(i) for i in items)
    return f"What you remember about the user (use it when relevant):\n{lines}"


def fuse(*rankings: Sequence[MemoryItem], limit: int | None = None) -> list[MemoryItem]:
    """Reciprocal rank fusion: each item scores the sum of ``1 / (60 + rank)`` over the lists.

    The lists are each best first (BM25 and similarity, both weighted by
    recency); an item in both outranks one found by only one of them. Only
    the best ``limit`` are returned (None: all).
    """
    scores: dict[int, float] = {}
    items: dict[int, MemoryItem] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item.id] = scores.get(item.id, 0.0) + 1.0 / (_RRF_K + rank)
            items.setdefault(item.id, item)
    best = sorted(scores, key=scores.__getitem__, reverse=True)[:limit]
    return [replace(items[i], score=scores[i]) for i in best]


def _match_query(text: str, *, conjunction: str = "OR") -> str:
    """An FTS5 query of the text's significant words, each quoted (no syntax injection)."""
    words: list[str] = []
    for word in _WORD.findall(text.lower()):
        word = word.strip("'")
        if len(word) < 2 or word in _STOPWORDS or word in words:
            continue
        words.append(word)
    return f" {conjunction} ".join(f'"{w}"' for w in words[:16])


class MemoryUnavailableError(RuntimeError):
    """The store is disabled (corrupt or unopenable database)."""


class MemoryStore:
    """SQLite memory of one app instance (several users, each by ``user_id``).

    Args:
        path: Database file; its directory is created.
        half_life_days: Age at which a memory's score is halved.
        busy_timeout_ms: How long a call waits for a lock before giving up.
        max_item_chars: Longest text one memory keeps (``twin.memory.max_item_chars``);
            longer text is stored cut to it.
        encoder: Loads the sentence encoder (called once, on the background
            thread); None recalls by BM25 alone and keeps no vectors.
        semantic_candidates: Nearest memories by hamming distance of the
            binary-quantised vectors whose exact cosine similarity is then
            compared, per turn (shared out over the facts and the window's blocks).
        semantic_window: Episodes searched by meaning: those among about the
            newest ``semantic_window`` memories (facts: all of them).
        min_similarity: Cosine similarity below which a memory is not recalled
            by meaning (BM25 may still find it).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        half_life_days: float = 30.0,
        busy_timeout_ms: int = 250,
        max_item_chars: int = _MAX_ITEM_CHARS,
        encoder: Callable[[], Embedder] | None = None,
        semantic_candidates: int = 100,
        semantic_window: int = 20_000,
        min_similarity: float = 0.3,
    ) -> None:
        self._path = Path(path).expanduser()
        self._half_life_s = half_life_days * 86400.0
        self._busy_timeout_ms = busy_timeout_ms
        self.max_item_chars = max_item_chars
        self._load_encoder = encoder
        self._semantic_candidates = semantic_candidates
        self._semantic_window = semantic_window
        self._min_similarity = min_similarity
        self._db: apsw.Connection | None = None
        self._lock = threading.Lock()
        self._indexer: _Indexer | None = None
        self._last_query: tuple[str, np.ndarray] | None = None
        self.error: str | None = None

    @classmethod
    def from_config(cls, config: MemoryConfig) -> MemoryStore:
        """The store ``[twin.memory]`` describes (the process's shared encoder when semantic)."""
        from pipecat_app.twin.embedding import sentence_encoder

        return cls(
            config.path,
            half_life_days=config.half_life_days,
            max_item_chars=config.max_item_chars,
            encoder=(
                functools.partial(sentence_encoder, config.embedding_threads)
                if config.semantic
                else None
            ),
            semantic_candidates=config.semantic_candidates,
            semantic_window=config.semantic_window,
            min_similarity=config.min_similarity,
        )

    @property
    def available(self) -> bool:
        """True while the store is open and usable."""
        return self._db is not None

    @property
    def encoder(self) -> Embedder | None:
        """The sentence encoder once the background thread has loaded it, else None."""
        return self._indexer.encoder if self._indexer is not None else None

    def open(self) -> bool:
        """Open (and create) the database; on failure log, count and run without memory.

        sqlite-vec is loaded; with an encoder the background thread starts
        (it loads the encoder, then embeds what has no vector yet).
        """
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = apsw.Connection(str(self._path))
            db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            db.execute("PRAGMA synchronous = NORMAL")
            # Always: a memory deleted here deletes its vector too (a trigger).
            vectors = _load_sqlite_vec(db)
            db.execute(_SCHEMA)
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise apsw.CorruptError(f"integrity check failed: {check}")
        except (apsw.Error, OSError) as exc:
            self._fail(f"cannot open memory database {self._path}: {exc}")
            return False
        if str(mode).lower() != "wal":
            logger.warning(f"memory: {self._path} journal mode is {mode}, not WAL")
        self._db = db
        self.error = None
        logger.info(f"memory: opened {self._path}")
        if vectors and self._load_encoder is not None:
            self._indexer = _Indexer(self, self._load_encoder)
            self._indexer.start()
        return True

    def close(self) -> None:
        """Stop the background thread and close the database (a no-op when not open)."""
        if self._indexer is not None:
            self._indexer.stop()
            self._indexer = None
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def wait_indexed(self, timeout: float = 60.0) -> bool:
        """Wait until every memory written so far has its vector (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            indexer = self._indexer
            if indexer is None:
                return False
            if indexer.encoder is not None and not self.unembedded(1):
                return True
            time.sleep(0.02)
        return False

    def _fail(self, message: str) -> None:
        MEMORY_ERRORS.inc()
        self.error = message
        logger.error(f"memory: {message}; the conversation goes on without memory")

    def _call_failed(self, what: str, exc: apsw.Error) -> None:
        """A failed call: transient (locked, busy) or fatal (corrupt: disable the store)."""
        if isinstance(exc, _FATAL):
            self._fail(f"{what} failed, database {self._path} is damaged: {exc}")
            self.close()
        else:
            MEMORY_ERRORS.inc()
            logger.error(f"memory: {what} failed on {self._path}: {exc}; skipped this time")

    def _conn(self) -> apsw.Connection:
        if self._db is None:
            raise MemoryUnavailableError(self.error or "memory is not open")
        return self._db

    # -- writing ---------------------------------------------------------

    def _fitted(self, text: str, what: str) -> str:
        """``text`` cut to :attr:`max_item_chars` (logged when it had to be)."""
        if len(text) <= self.max_item_chars:
            return text
        logger.warning(
            f"memory: {len(text)} characters of {what} text are stored cut to their first "
            f"{self.max_item_chars} (twin.memory.max_item_chars)"
        )
        return text[: self.max_item_chars].rstrip()

    def remember(
        self,
        user_id: str,
        text: str,
        *,
        kind: Kind = "fact",
        role: str = "",
        at: float | None = None,
    ) -> int | None:
        """Store one memory; returns its id, or None when the store failed (logged).

        Text over :attr:`max_item_chars` is stored cut to it. Its vector
        follows on the background thread.
        """
        text = text.strip()
        if not text:
            return None
        text = self._fitted(text, kind)
        try:
            with self._lock:
                db = self._conn()
                db.execute(
                    "INSERT INTO memories (user_id, kind, role, text, created) VALUES (?,?,?,?,?)",
                    (user_id, kind, role, text, time.time() if at is None else at),
                )
                rowid = db.last_insert_rowid()
        except MemoryUnavailableError:
            return None
        except apsw.Error as exc:
            self._call_failed("remember", exc)
            return None
        self._written()
        return rowid

    def remember_many(self, rows: Iterable[tuple[str, Kind, str, str, float]]) -> None:
        """Bulk insert ``(user_id, kind, role, text, created)`` rows in one transaction.

        Texts over :attr:`max_item_chars` are stored cut to it.
        """
        with self._lock:
            db = self._conn()
            with db:
                db.executemany(
                    "INSERT INTO memories (user_id, kind, role, text, created) VALUES (?,?,?,?,?)",
                    ((u, k, r, self._fitted(t, k), c) for u, k, r, t, c in rows),
                )
        self._written()

    def _written(self) -> None:
        if self._indexer is not None:
            self._indexer.wake()

    def forget(self, user_id: str, query: str) -> int:
        """Delete the user's memories that contain every significant word of ``query``.

        Their vectors go with them. Returns how many were deleted (0 when
        nothing matched or the store failed).
        """
        match = _match_query(query, conjunction="AND")
        if not match:
            return 0
        try:
            with self._lock:
                db = self._conn()
                with db:
                    db.execute(
                        "DELETE FROM memories WHERE user_id = ? AND id IN "
                        "(SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?)",
                        (user_id, match),
                    )
                    return db.changes()
        except MemoryUnavailableError:
            return 0
        except apsw.Error as exc:
            self._call_failed("forget", exc)
            return 0

    def unembedded(self, limit: int) -> list[tuple[int, str]]:
        """``(id, text)`` of up to ``limit`` memories that wait for their vector, oldest first."""
        with self._lock:
            return list(
                self._conn().execute(
                    "SELECT m.id, m.text FROM memories_unembedded AS u "
                    "JOIN memories AS m ON m.id = u.id ORDER BY u.id LIMIT ?",
                    (limit,),
                )
            )

    def write_vectors(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Store the vectors of memories ``ids``; they no longer wait for one.

        One transaction: a kill leaves all of it or none. A memory deleted
        since it was read gets no vector.
        """
        with self._lock:
            db = self._conn()
            with db:
                db.executemany(
                    "INSERT OR REPLACE INTO memories_vec "
                    "(rowid, user_id, kind, block, embedding, vector) "
                    "SELECT id, user_id, kind, "
                    f"CASE kind WHEN 'fact' THEN 0 ELSE id / {_BLOCK} END, "
                    "vec_quantize_binary(?1), ?1 "
                    "FROM memories WHERE id = ?2",
                    (
                        (np.asarray(v, dtype=np.float32).tobytes(), i)
                        for i, v in zip(ids, vectors, strict=True)
                    ),
                )
                db.executemany("DELETE FROM memories_unembedded WHERE id = ?", ((i,) for i in ids))

    def prepare_vectors(self, model: str, dimensions: int) -> None:
        """Make the vector table for ``model``; on the first start every memory waits for one.

        Vectors of another model are dropped (they will be rebuilt), never mixed.
        """
        with self._lock:
            db = self._conn()
            with db:
                row = db.execute("SELECT model FROM memory_vectors_state").fetchone()
                if row is not None and row[0] != model:
                    logger.info(f"memory: vectors of {row[0]} dropped, re-embedding with {model}")
                    db.execute(_DROP_VECTORS)
                    row = None
                db.execute(_VECTOR_SCHEMA.format(dimensions=int(dimensions)))
                if row is None:
                    db.execute("INSERT INTO memories_unembedded (id) SELECT id FROM memories")
                    db.execute(
                        "INSERT INTO memory_vectors_state (id, model) VALUES (1, ?)", (model,)
                    )

    # -- reading ---------------------------------------------------------

    def embed_query(self, text: str) -> np.ndarray | None:
        """The turn's query vector (None until the encoder is loaded); the last one is kept."""
        encoder = self.encoder
        if encoder is None or not text:
            return None
        if self._last_query is not None and self._last_query[0] == text:
            return self._last_query[1]
        vector = encoder.encode([text])[0]
        self._last_query = (text, vector)
        return vector

    def recall(
        self,
        user_id: str,
        text: str,
        *,
        limit: int = 8,
        now: float | None = None,
        candidates: int = 200,
        query_vector: np.ndarray | None = None,
        lexical: bool = True,
    ) -> list[MemoryItem]:
        """Memories relevant to ``text``, best first.

        By BM25 relevance weighted by recency: the candidates are the
        ``candidates`` most recently stored matches (FTS5 walks its index
        newest first and stops there, so the cost stays flat as the store
        grows to 100,000 items and beyond); they are then ranked by BM25 times
        the recency decay. Given ``query_vector`` (the turn's embedding), also
        by meaning: the nearest vectors (cosine similarity of at least
        ``min_similarity``, times the recency decay), and the two lists fused
        by reciprocal rank. ``lexical=False`` leaves BM25 out (benchmarks).

        Returns an empty list when nothing matches or the store failed (logged,
        ``MEMORY_ERRORS``); it never raises.
        """
        now = time.time() if now is None else now
        try:
            lexical_items = self._by_words(user_id, text, now, candidates) if lexical else []
            if query_vector is None:
                return lexical_items[:limit]
            meaning = self._by_meaning(user_id, query_vector, now)
        except MemoryUnavailableError:
            return []
        except apsw.Error as exc:
            self._call_failed("recall", exc)
            return []
        return fuse(lexical_items, meaning, limit=limit)

    def _recency(self, created: float, now: float) -> float:
        return 0.5 ** (max(0.0, now - created) / self._half_life_s)

    def _by_words(self, user_id: str, text: str, now: float, candidates: int) -> list[MemoryItem]:
        match = _match_query(text)
        if not match:
            return []
        # CROSS JOIN keeps FTS5's newest matches the outer loop, each memory
        # found by its id; left to itself the planner walked all of the user's
        # memories by index and probed the matches (10 ms at 100,000).
        with self._lock:
            rows = list(
                self._conn().execute(
                    "SELECT m.id, m.kind, m.role, m.text, m.created, f.score "
                    "FROM (SELECT rowid, rank AS score FROM memories_fts "
                    "      WHERE memories_fts MATCH ? ORDER BY rowid DESC LIMIT ?) AS f "
                    "CROSS JOIN memories AS m ON m.id = f.rowid WHERE m.user_id = ?",
                    (match, candidates, user_id),
                )
            )
        items = []
        for mid, kind, role, body, created, rank in rows:
            # rank (FTS5's bm25()) is negative, more negative is better; facts weigh a little more.
            relevance = -rank * (1.25 if kind == "fact" else 1.0)
            items.append(
                MemoryItem(mid, kind, role, body, created, relevance * self._recency(created, now))
            )
        items.sort(key=lambda i: i.score, reverse=True)
        return items

    def _by_meaning(self, user_id: str, query: np.ndarray, now: float) -> list[MemoryItem]:
        """The user's facts and recent episodes nearest to ``query``, by similarity x recency.

        sqlite-vec compares every vector of the partitions it is given, so
        episodes are searched in the id blocks of about the newest
        ``semantic_window`` memories, facts in all. Its cost grows with the
        vectors compared times ``k`` (it keeps each chunk's ``k`` nearest), so
        the ``semantic_candidates`` of a turn are shared out: the facts and
        each block get an equal ``k`` in their own KNN query, all in one
        statement. Per block, not one ``k`` over the window: recency weighs
        the similarity, and a newer block's nearest are not crowded out by
        an older block's slightly nearer ones.
        """
        if self.encoder is None:
            return []
        blob = np.asarray(query, dtype=np.float32).tobytes()
        with self._lock:
            db = self._conn()
            newest = db.execute("SELECT coalesce(max(id), 0) FROM memories").fetchone()[0]
            first_block = max(0, newest - self._semantic_window) // _BLOCK
            blocks = range(first_block, newest // _BLOCK + 1)
            k = max(1, math.ceil(self._semantic_candidates / (len(blocks) + 1)))
            knn = (
                "SELECT rowid, vector FROM memories_vec "
                "WHERE embedding MATCH vec_quantize_binary(?1) AND k = ?2 AND user_id = ?3 "
            )
            nearest = " UNION ALL ".join(
                [knn + "AND kind = 'fact'"]
                + [knn + f"AND kind = 'episode' AND block = {int(b)}" for b in blocks]
            )
            rows = list(
                db.execute(
                    "SELECT m.id, m.kind, m.role, m.text, m.created, "
                    "       1.0 - vec_distance_cosine(v.vector, ?1) "
                    f"FROM ({nearest}) AS v CROSS JOIN memories AS m ON m.id = v.rowid",
                    (blob, k, user_id),
                )
            )
        items = [
            MemoryItem(mid, kind, role, body, created, similarity * self._recency(created, now))
            for mid, kind, role, body, created, similarity in rows
            if similarity >= self._min_similarity
        ]
        items.sort(key=lambda i: i.score, reverse=True)
        return items

    def count(self, user_id: str | None = None) -> int:
        """Number of memories (of one user, or all)."""
        with self._lock:
            db = self._conn()
            if user_id is None:
                return db.execute("SELECT count(*) FROM memories").fetchone()[0]
            return db.execute(
                "SELECT count(*) FROM memories WHERE user_id = ?", (user_id,)
            ).fetchone()[0]


def _load_sqlite_vec(db: apsw.Connection) -> bool:
    """Load sqlite-vec into ``db``; False (logged) when it cannot be: BM25 recall only."""
    try:
        import sqlite_vec

        db.enable_load_extension(True)
        db.load_extension(sqlite_vec.loadable_path())
        db.enable_load_extension(False)
    except (ImportError, apsw.Error) as exc:
        logger.warning(f"memory: sqlite-vec not loaded ({exc}); recall by words only")
        return False
    return True


class _Indexer:
    """The store's background thread: load the encoder, then embed what has no vector.

    Embeds memories in id order, ``batch`` at a time, and sleeps until the
    store is written to again. A failure is logged and counted
    (``MEMORY_ERRORS``) and retried after ``retry_s``; recall goes on by BM25.
    """

    def __init__(
        self,
        store: MemoryStore,
        load: Callable[[], Embedder],
        *,
        batch: int = 32,
        retry_s: float = 5.0,
    ) -> None:
        self._store = store
        self._load = load
        self._batch = batch
        self._retry_s = retry_s
        self.encoder: Embedder | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-vectors", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if self.encoder is None:
                    started = time.perf_counter()
                    encoder = self._load()
                    self._store.prepare_vectors(encoder.model, encoder.dimensions)
                    self.encoder = encoder
                    logger.info(
                        f"memory: {encoder.model} loaded in {time.perf_counter() - started:.2f} s"
                    )
                self._embed_all()
            except MemoryUnavailableError:
                return
            except Exception as exc:  # memory must never stop the conversation
                MEMORY_ERRORS.inc()
                logger.error(f"memory: embedding failed ({exc}); retrying in {self._retry_s} s")
                self._stopping.wait(self._retry_s)
                continue
            self._wake.wait()

    def _embed_all(self) -> None:
        """Embed every memory that waits for its vector, a batch a transaction."""
        assert self.encoder is not None
        while not self._stopping.is_set():
            rows = self._store.unembedded(self._batch)
            if not rows:
                return
            vectors = self.encoder.encode([text for _, text in rows])
            self._store.write_vectors([mid for mid, _ in rows], vectors)


class TurnMemory:
    """Long-term memory around one conversation's turns: recalled before each, stored after.

    Args:
        store: The user's memory store.
        config: ``[twin.memory]``.
        user_id: Whose memories.
    """

    def __init__(self, store: MemoryStore, config: MemoryConfig, user_id: str) -> None:
        self.store = store
        self._config = config
        self._user_id = user_id
        self._since = time.time()

    def open(self) -> None:
        """Open the store (when memory is on); the conversation starts now."""
        self._since = time.time()
        if self._config.enabled:
            self.store.open()

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def recalled(self, user_text: str) -> str:
        """The memory block for a turn, within the token budget (empty: nothing to add).

        Recalled by words and, once the encoder is loaded, by meaning (the
        turn embedded once). Turns of this conversation are left out: they
        are in the context already.
        """
        if not self._config.enabled or not user_text:
            return ""
        items = self.store.recall(
            self._user_id,
            user_text,
            limit=self._config.recall_limit,
            query_vector=self.store.embed_query(user_text),
        )
        items = [i for i in items if i.kind == "fact" or i.created < self._since]
        return render_block(fit_to_budget(items, self._config.token_budget))

    def remember_turn(self, role: str, text: str) -> None:
        """Store one side of a turn as an episodic memory (cut to ``max_item_chars``)."""
        if self._config.enabled and text.strip():
            self.store.remember(self._user_id, text, kind="episode", role=role)
