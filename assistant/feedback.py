"""Human feedback: thumbs on chat answers and blind A/B votes, stored with full provenance in SQLite.

One row per rating or vote holds the whole conversation, the answer(s), the variants' names and
configuration hashes, and a UTC timestamp, so a preference pair can always be traced back to exactly what
was shown. The database runs in WAL mode (readers never block the writer) and every write is one short
``BEGIN IMMEDIATE`` transaction with a generous busy timeout, so many people voting at once queue for a
few milliseconds instead of losing votes. ``PRAGMA user_version`` holds the schema version; ``migrate``
brings an older file up to date.

    store = FeedbackStore("feedback/feedback.db")
    shown = Shown(answer, variant.name, variant.variant_hash())
    store.add_rating(conversation, shown, +1, comment="clear and correct")
    store.add_vote(conversation, shown_a, shown_b, "a")    # outcome: a, b, tie or both_bad
    leaderboard(store.votes())     # Bradley-Terry ratings with bootstrap intervals
    preference_pairs(store)        # {prompt, chosen, rejected, provenance} rows for DPO

Personal data: a store given a ``Redactor`` (assistant/redaction.py) redacts every conversation, answer and
comment before writing it (the app's --redact); ``scrub`` rewrites what is stored already, in one transaction,
and then rebuilds the file so that no old copy of a row survives in free pages or the write-ahead log.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from assistant.redaction import Redactor

SCHEMA_VERSION = 1
OUTCOMES = ("a", "b", "tie", "both_bad")

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS ratings (
        id INTEGER PRIMARY KEY,
        created TEXT NOT NULL,
        session TEXT,
        conversation TEXT NOT NULL,      -- JSON list of {role, content}, ending with the user message answered
        answer TEXT NOT NULL,
        variant TEXT NOT NULL,
        variant_hash TEXT NOT NULL,
        rating INTEGER NOT NULL CHECK (rating IN (-1, 1)),
        comment TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS votes (
        id INTEGER PRIMARY KEY,
        created TEXT NOT NULL,
        session TEXT,
        conversation TEXT NOT NULL,
        answer_a TEXT NOT NULL,
        variant_a TEXT NOT NULL,
        hash_a TEXT NOT NULL,
        answer_b TEXT NOT NULL,
        variant_b TEXT NOT NULL,
        hash_b TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'both_bad'))
    )""",
    "CREATE INDEX IF NOT EXISTS ratings_by_variant ON ratings (variant_hash)",
    "CREATE INDEX IF NOT EXISTS votes_by_variants ON votes (hash_a, hash_b)",
]
MIGRATIONS: dict[int, list[str]] = {1: _SCHEMA}
"""Statements that take a database from version N-1 to N; add an entry for each schema change."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Shown:
    """An answer as it was shown: the text and the variant that wrote it."""

    answer: str
    variant: str
    variant_hash: str


SCRUBBED_COLUMNS = {"ratings": ("conversation", "answer", "comment"), "votes": ("conversation", "answer_a", "answer_b")}
"""The columns that hold what people and variants wrote; the rest are names, hashes, times and outcomes."""


@dataclass
class Scrubbed:
    """What ``FeedbackStore.scrub`` replaced."""

    kinds: Counter
    """Items replaced, by kind (EMAIL, PHONE, CARD, or a domain pattern's label)."""
    rows: dict[str, int]
    """Rows changed, by table."""
    total: dict[str, int]
    """Rows read, by table."""
    log_cleared: bool = True
    """False when another connection kept the write-ahead log from being emptied (old text may remain in the
    -wal file until the app stops)."""


class FeedbackStore:
    """The feedback database. Safe to share between threads: each call opens its own short connection.

    Args:
        path: the database file (created with its folder when missing).
        busy_timeout_s: how long a write waits for another writer.
        redactor: when given, every conversation, answer and comment is redacted before it is written.
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = 60.0, redactor: Redactor | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        self.redactor = redactor
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            migrate(db)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        db.row_factory = sqlite3.Row
        return db

    def _write(self, sql: str, values: tuple) -> int:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            row_id = db.execute(sql, values).lastrowid
            db.execute("COMMIT")
            return int(row_id)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def add_rating(self, conversation: list[dict[str, str]], shown: Shown, rating: int,
                   comment: str | None = None, session: str | None = None) -> int:
        if rating not in (-1, 1):
            raise ValueError("rating must be +1 (thumbs up) or -1 (thumbs down)")
        conversation, (answer, comment) = self._redacted(conversation, shown.answer, comment)
        return self._write(
            "INSERT INTO ratings (created, session, conversation, answer, variant, variant_hash, rating, comment) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (_now(), session, json.dumps(conversation, ensure_ascii=False), answer, shown.variant,
             shown.variant_hash, rating, comment or None),
        )

    def _redacted(self, conversation: list[dict[str, str]], *texts: str | None):
        if self.redactor is None:
            return conversation, texts
        return self.redactor.redact_messages(conversation), tuple(self.redactor.redact(t) if t else t for t in texts)

    def comment_last_rating(self, session: str, comment: str) -> bool:
        """Attaches a comment to the session's latest rating; False when it has none."""
        if self.redactor is not None:
            comment = self.redactor.redact(comment)
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT id FROM ratings WHERE session = ? ORDER BY id DESC LIMIT 1", (session,)).fetchone()
            if row:
                db.execute("UPDATE ratings SET comment = ? WHERE id = ?", (comment, row["id"]))
            db.execute("COMMIT")
            return row is not None
        finally:
            db.close()

    def add_vote(self, conversation: list[dict[str, str]], a: Shown, b: Shown, outcome: str,
                 session: str | None = None) -> int:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
        conversation, (answer_a, answer_b) = self._redacted(conversation, a.answer, b.answer)
        return self._write(
            "INSERT INTO votes (created, session, conversation, answer_a, variant_a, hash_a, answer_b, variant_b, "
            "hash_b, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_now(), session, json.dumps(conversation, ensure_ascii=False), answer_a, a.variant, a.variant_hash,
             answer_b, b.variant, b.variant_hash, outcome),
        )

    def scrub(self, redactor: Redactor, dry_run: bool = False) -> Scrubbed:
        """Redacts every stored conversation, answer and comment in place.

        All rows change in one ``BEGIN IMMEDIATE`` transaction (the app's writers wait for it; a crash or an
        error leaves the file as it was), with ``secure_delete`` so that the old text is overwritten, not
        merely freed. Then ``VACUUM`` and a truncating checkpoint leave no old page in the file or its
        write-ahead log. Text without personal data is not rewritten.

        Args:
            redactor: what to find and replace.
            dry_run: count what would be replaced, and change nothing.
        """
        kinds: Counter = Counter()
        rows = {table: 0 for table in SCRUBBED_COLUMNS}
        total = dict(rows)
        cleared = True
        db = self._connect()
        try:
            db.execute("PRAGMA secure_delete=ON")
            db.execute("BEGIN IMMEDIATE")
            for table, columns in SCRUBBED_COLUMNS.items():
                found = db.execute(f"SELECT id, {', '.join(columns)} FROM {table} ORDER BY id").fetchall()  # noqa: S608
                total[table] = len(found)
                for row in found:
                    changed = {}
                    for column in columns:
                        value = row[column]
                        if value is None:
                            continue
                        if column == "conversation":
                            messages = json.loads(value)
                            new = redactor.redact_messages(messages, kinds)
                            if new != messages:
                                changed[column] = json.dumps(new, ensure_ascii=False)
                        else:
                            new = redactor.redact(value, kinds)
                            if new != value:
                                changed[column] = new
                    if changed:
                        rows[table] += 1
                        if not dry_run:
                            assignments = ", ".join(f"{column} = ?" for column in changed)
                            db.execute(f"UPDATE {table} SET {assignments} WHERE id = ?",  # noqa: S608 (fixed names)
                                       (*changed.values(), row["id"]))
            db.execute("ROLLBACK" if dry_run else "COMMIT")
            if not dry_run and any(rows.values()):
                db.execute("VACUUM")  # rebuilds the file: freed pages that held old text are gone
                busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]  # and the log's copies of them
                cleared = busy == 0
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()
        return Scrubbed(kinds, rows, total, cleared)

    def _rows(self, table: str) -> list[dict[str, Any]]:
        db = self._connect()
        try:
            rows = [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY id")]  # noqa: S608 (fixed names)
        finally:
            db.close()
        for row in rows:
            row["conversation"] = json.loads(row["conversation"])
        return rows

    def ratings(self) -> list[dict[str, Any]]:
        return self._rows("ratings")

    def votes(self) -> list[dict[str, Any]]:
        return self._rows("votes")

    def schema_version(self) -> int:
        db = self._connect()
        try:
            return int(db.execute("PRAGMA user_version").fetchone()[0])
        finally:
            db.close()


def migrate(db: sqlite3.Connection) -> int:
    """Applies every migration newer than the file's ``user_version``, each in one transaction."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"feedback database schema {version} is newer than this code understands ({SCHEMA_VERSION})")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        for statement in MIGRATIONS[target]:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {target}")
        db.execute("COMMIT")
    return SCHEMA_VERSION


# -- leaderboard ------------------------------------------------------------------------------------------

VOTE_SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


@dataclass
class Standing:
    variant: str
    rating: float
    low: float
    high: float
    votes: int
    wins: int


def leaderboard(votes: list[dict[str, Any]], rounds: int = 200, seed: int = 0) -> list[Standing]:
    """Bradley-Terry ratings from every vote (ties and 'both bad' count half), with 95% intervals from
    resampling the votes, best first. Variants are told apart by configuration hash and shown by name."""
    import numpy as np

    from assistant.stats import bradley_terry

    names: dict[str, str] = {}
    games = []
    for v in votes:
        names[v["hash_a"]] = v["variant_a"]
        names[v["hash_b"]] = v["variant_b"]
        games.append((v["hash_a"], v["hash_b"], VOTE_SCORE[v["outcome"]]))
    if not games:
        return []
    players = sorted(names)
    point = bradley_terry(players, games)
    rng = np.random.default_rng(seed)
    draws = {p: [] for p in players}
    for _ in range(rounds):
        sample = [games[i] for i in rng.integers(0, len(games), len(games))]
        for p, r in bradley_terry(players, sample).items():
            draws[p].append(r)
    table = []
    for p in players:
        low, high = np.percentile(draws[p], [2.5, 97.5])
        played = [g for g in games if p in g[:2]]
        wins = sum(1 for a, b, s in played if (a == p and s == 1.0) or (b == p and s == 0.0))
        label = names[p] if list(names.values()).count(names[p]) == 1 else f"{names[p]} ({p[:6]})"
        table.append(Standing(label, point[p], float(low), float(high), len(played), wins))
    return sorted(table, key=lambda s: -s.rating)


# -- preference pairs -------------------------------------------------------------------------------------


def preference_pairs(store: FeedbackStore) -> Iterator[dict[str, Any]]:
    """Preference pairs for DPO: ``{prompt, chosen, rejected, provenance}``.

    From arena votes where one side won (ties and 'both bad' say nothing about which is better), and from
    thumbs: a liked and a disliked answer to the same conversation. ``prompt`` is the conversation as a
    message list ending with the user message that was answered.
    """
    for v in store.votes():
        if v["outcome"] not in ("a", "b"):
            continue
        win, lose = ("a", "b") if v["outcome"] == "a" else ("b", "a")
        if v[f"answer_{win}"].strip() == v[f"answer_{lose}"].strip():
            continue
        yield {
            "prompt": v["conversation"],
            "chosen": v[f"answer_{win}"],
            "rejected": v[f"answer_{lose}"],
            "provenance": {"source": "arena", "vote_id": v["id"], "created": v["created"],
                           "chosen_variant": v[f"variant_{win}"], "chosen_hash": v[f"hash_{win}"],
                           "rejected_variant": v[f"variant_{lose}"], "rejected_hash": v[f"hash_{lose}"]},
        }
    by_prompt: dict[str, dict[int, list[dict]]] = {}
    for r in store.ratings():
        key = json.dumps(r["conversation"], sort_keys=True)
        by_prompt.setdefault(key, {1: [], -1: []})[r["rating"]].append(r)
    for groups in by_prompt.values():
        for liked in groups[1]:
            for disliked in groups[-1]:
                if liked["answer"].strip() == disliked["answer"].strip():
                    continue
                yield {
                    "prompt": liked["conversation"],
                    "chosen": liked["answer"],
                    "rejected": disliked["answer"],
                    "provenance": {"source": "thumbs", "chosen_rating_id": liked["id"],
                                   "rejected_rating_id": disliked["id"],
                                   "chosen_variant": liked["variant"], "chosen_hash": liked["variant_hash"],
                                   "rejected_variant": disliked["variant"], "rejected_hash": disliked["variant_hash"]},
                }
