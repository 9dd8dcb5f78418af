"""Long-term memory: episodic turns and semantic facts per user in SQLite.

The store is one SQLite file in WAL mode (a Nomad host volume in the cluster),
with an FTS5 index over the text. Recall ranks full-text matches by BM25 and
weights them by recency (exponential decay with a configurable half-life);
:func:`fit_to_budget` then keeps the best items that fit the turn's token
budget. :class:`TurnMemory` is what one conversation does with it: recall
for each turn's system message, and each turn stored.

Memory is a convenience, never a reason for the conversation to stop: a
corrupt database disables the store (logged once, ``MEMORY_ERRORS``), a
locked or failing one makes that one call return nothing (logged,
``MEMORY_ERRORS``), and the turn goes on without memory.
"""

from __future__ import annotations

import contextlib
import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loguru import logger

from pipecat_app.metrics import MEMORY_ERRORS
from pipecat_app.twin.config import MemoryConfig

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
"""

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
    """

    def __init__(
        self,
        path: Path | str,
        *,
        half_life_days: float = 30.0,
        busy_timeout_ms: int = 250,
        max_item_chars: int = _MAX_ITEM_CHARS,
    ) -> None:
        self._path = Path(path).expanduser()
        self._half_life_s = half_life_days * 86400.0
        self._busy_timeout_ms = busy_timeout_ms
        self.max_item_chars = max_item_chars
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.error: str | None = None

    @property
    def available(self) -> bool:
        """True while the store is open and usable."""
        return self._db is not None

    def open(self) -> bool:
        """Open (and create) the database; on failure log, count and run without memory."""
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        except (sqlite3.Error, OSError) as exc:
            self._fail(f"cannot open memory database {self._path}: {exc}")
            return False
        if mode.lower() != "wal":
            logger.warning(f"memory: {self._path} journal mode is {mode}, not WAL")
        self._db = db
        self.error = None
        logger.info(f"memory: opened {self._path}")
        return True

    def close(self) -> None:
        """Close the database (a no-op when it is not open)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def _fail(self, message: str) -> None:
        MEMORY_ERRORS.inc()
        self.error = message
        logger.error(f"memory: {message}; the conversation goes on without memory")

    def _call_failed(self, what: str, exc: sqlite3.Error) -> None:
        """A failed call: transient (locked, busy) or fatal (corrupt: disable the store)."""
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            self._fail(f"{what} failed, database {self._path} is damaged: {exc}")
            self.close()
        else:
            MEMORY_ERRORS.inc()
            logger.error(f"memory: {what} failed on {self._path}: {exc}; skipped this time")

    def _conn(self) -> sqlite3.Connection:
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

        Text over :attr:`max_item_chars` is stored cut to it.
        """
        text = text.strip()
        if not text:
            return None
        text = self._fitted(text, kind)
        try:
            with self._lock:
                cur = self._conn().execute(
                    "INSERT INTO memories (user_id, kind, role, text, created) VALUES (?,?,?,?,?)",
                    (user_id, kind, role, text, time.time() if at is None else at),
                )
            return cur.lastrowid
        except MemoryUnavailableError:
            return None
        except sqlite3.Error as exc:
            self._call_failed("remember", exc)
            return None

    def remember_many(self, rows: Iterable[tuple[str, Kind, str, str, float]]) -> None:
        """Bulk insert ``(user_id, kind, role, text, created)`` rows in one transaction.

        Texts over :attr:`max_item_chars` are stored cut to it.
        """
        with self._lock:
            db = self._conn()
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO memories (user_id, kind, role, text, created) VALUES (?,?,?,?,?)",
                ((u, k, r, self._fitted(t, k), c) for u, k, r, t, c in rows),
            )
            db.execute("COMMIT")

    def forget(self, user_id: str, query: str) -> int:
        """Delete the user's memories that contain every significant word of ``query``.

        Returns how many were deleted (0 when nothing matched or the store failed).
        """
        match = _match_query(query, conjunction="AND")
        if not match:
            return 0
        try:
            with self._lock:
                db = self._conn()
                db.execute("BEGIN")
                cur = db.execute(
                    "DELETE FROM memories WHERE user_id = ? AND id IN "
                    "(SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?)",
                    (user_id, match),
                )
                db.execute("COMMIT")
            return cur.rowcount
        except MemoryUnavailableError:
            return 0
        except sqlite3.Error as exc:
            self._rollback()
            self._call_failed("forget", exc)
            return 0

    def _rollback(self) -> None:
        if self._db is not None and self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    # -- reading ---------------------------------------------------------

    def recall(
        self,
        user_id: str,
        text: str,
        *,
        limit: int = 8,
        now: float | None = None,
        candidates: int = 200,
    ) -> list[MemoryItem]:
        """Memories relevant to ``text``: BM25 relevance weighted by recency, best first.

        The candidates are the ``candidates`` most recently stored matches
        (FTS5 walks its index newest first and stops there, so the cost stays
        flat as the store grows to 100,000 items and beyond); they are then
        ranked by BM25 times the recency decay.

        Returns an empty list when nothing matches or the store failed (logged,
        ``MEMORY_ERRORS``); it never raises.
        """
        match = _match_query(text)
        if not match or self._db is None:
            return []
        now = time.time() if now is None else now
        try:
            with self._lock:
                rows = (
                    self._conn()
                    .execute(
                        "SELECT m.id, m.kind, m.role, m.text, m.created, f.score "
                        "FROM (SELECT rowid, bm25(memories_fts) AS score FROM memories_fts "
                        "      WHERE memories_fts MATCH ? ORDER BY rowid DESC LIMIT ?) AS f "
                        "JOIN memories AS m ON m.id = f.rowid WHERE m.user_id = ?",
                        (match, candidates, user_id),
                    )
                    .fetchall()
                )
        except MemoryUnavailableError:
            return []
        except sqlite3.Error as exc:
            self._call_failed("recall", exc)
            return []
        items = []
        for mid, kind, role, body, created, rank in rows:
            age = max(0.0, now - created)
            recency = 0.5 ** (age / self._half_life_s)
            # bm25() is negative (more negative = better); facts weigh a little more.
            relevance = -rank * (1.25 if kind == "fact" else 1.0)
            items.append(MemoryItem(mid, kind, role, body, created, relevance * recency))
        items.sort(key=lambda i: i.score, reverse=True)
        return items[:limit]

    def count(self, user_id: str | None = None) -> int:
        """Number of memories (of one user, or all)."""
        db = self._conn()
        if user_id is None:
            return db.execute("SELECT count(*) FROM memories").fetchone()[0]
        return db.execute("SELECT count(*) FROM memories WHERE user_id = ?", (user_id,)).fetchone()[
            0
        ]


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

        Turns of this conversation are left out: they are in the context already.
        """
        if not self._config.enabled or not user_text:
            return ""
        items = self.store.recall(self._user_id, user_text, limit=self._config.recall_limit)
        items = [i for i in items if i.kind == "fact" or i.created < self._since]
        return render_block(fit_to_budget(items, self._config.token_budget))

    def remember_turn(self, role: str, text: str) -> None:
        """Store one side of a turn as an episodic memory (cut to ``max_item_chars``)."""
        if self._config.enabled and text.strip():
            self.store.remember(self._user_id, text, kind="episode", role=role)
