"""The feedback store: provenance, WAL and concurrent writers, schema version, leaderboard, preference pairs."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from assistant.feedback import SCHEMA_VERSION, FeedbackStore, Shown, leaderboard, preference_pairs

CONVERSATION = [{"role": "user", "content": "Can I return an opened grinder?"}]
A = Shown("Yes, within 30 days.", "prompt+retrieval", "aaaaaaaaaaaa")
B = Shown("I do not know.", "bare-prompt", "bbbbbbbbbbbb")


def test_rows_keep_full_provenance(tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    store.add_rating(CONVERSATION, A, -1, comment="wrong window", session="s1")
    store.add_vote(CONVERSATION, A, B, "a", session="s2")
    rating, = store.ratings()
    assert rating["conversation"] == CONVERSATION and rating["answer"] == A.answer
    assert (rating["variant"], rating["variant_hash"], rating["rating"], rating["comment"]) == (
        "prompt+retrieval", "aaaaaaaaaaaa", -1, "wrong window")
    assert rating["created"].endswith("Z")
    vote, = store.votes()
    assert (vote["hash_a"], vote["hash_b"], vote["outcome"]) == ("aaaaaaaaaaaa", "bbbbbbbbbbbb", "a")
    with sqlite3.connect(tmp_path / "fb.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(ValueError):
        store.add_vote(CONVERSATION, A, B, "maybe")
    with pytest.raises(ValueError):
        store.add_rating(CONVERSATION, A, 0)


def test_no_vote_is_lost_when_many_write_at_once(tmp_path):
    path = tmp_path / "fb.db"
    FeedbackStore(path)
    errors = []

    def voter(n: int) -> None:
        store = FeedbackStore(path)  # each client its own store object and connections
        try:
            for i in range(25):
                store.add_vote(CONVERSATION + [{"role": "user", "content": f"{n}-{i}"}], A, B, "ab"[i % 2])
                store.add_rating(CONVERSATION, A, 1, session=f"{n}")
        except Exception as exc:  # collected: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=voter, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = FeedbackStore(path)
    assert len(store.votes()) == 500 and len(store.ratings()) == 500
    assert len({v["conversation"][-1]["content"] for v in store.votes()}) == 500


def test_schema_version_and_migration_of_an_empty_file(tmp_path):
    path = tmp_path / "old.db"
    sqlite3.connect(path).close()  # a version-0 file
    store = FeedbackStore(path)
    assert store.schema_version() == SCHEMA_VERSION
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        FeedbackStore(path)


def test_comment_attaches_to_the_sessions_latest_rating(tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    assert not store.comment_last_rating("s1", "nothing to attach to")
    store.add_rating(CONVERSATION, A, 1, session="s1")
    store.add_rating(CONVERSATION, B, -1, session="s1")
    assert store.comment_last_rating("s1", "the second one was vague")
    assert [r["comment"] for r in store.ratings()] == [None, "the second one was vague"]


def test_leaderboard_orders_by_bradley_terry_and_counts_votes(tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    C = Shown("Maybe.", "adapter", "cccccccccccc")
    for _ in range(8):
        store.add_vote(CONVERSATION, A, B, "a")
    for _ in range(2):
        store.add_vote(CONVERSATION, B, A, "a")  # B wins when shown on the left: sides are not names
    for _ in range(5):
        store.add_vote(CONVERSATION, C, B, "tie")
    table = leaderboard(store.votes())
    assert [s.variant for s in table] == ["prompt+retrieval", "adapter", "bare-prompt"]
    top = table[0]
    assert (top.votes, top.wins) == (10, 8) and top.low <= top.rating <= top.high
    assert {s.variant: s.votes for s in table} == {"prompt+retrieval": 10, "adapter": 5, "bare-prompt": 15}
    # the same votes in another order give the same table (Bradley-Terry, not online Elo)
    reordered = list(reversed(store.votes()))
    assert [round(s.rating, 6) for s in leaderboard(reordered)] == [round(s.rating, 6) for s in table]


def test_preference_pairs_from_votes_and_thumbs(tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    store.add_vote(CONVERSATION, A, B, "b")
    store.add_vote(CONVERSATION, A, B, "tie")  # says nothing about which is better
    store.add_vote(CONVERSATION, A, A, "a")  # the same answer twice: no pair
    other = [{"role": "user", "content": "Do you ship to Canada?"}]
    store.add_rating(other, Shown("Yes, in 5-8 days.", "adapter", "c" * 12), 1)
    store.add_rating(other, Shown("No idea.", "bare-prompt", "b" * 12), -1)
    store.add_rating(CONVERSATION, A, 1)  # liked with nothing disliked for this prompt: no pair
    pairs = list(preference_pairs(store))
    assert len(pairs) == 2
    arena, thumbs = pairs
    assert (arena["chosen"], arena["rejected"]) == (B.answer, A.answer)
    assert arena["prompt"] == CONVERSATION and arena["provenance"]["chosen_hash"] == "bbbbbbbbbbbb"
    assert (thumbs["chosen"], thumbs["rejected"]) == ("Yes, in 5-8 days.", "No idea.")
    assert thumbs["provenance"]["source"] == "thumbs" and thumbs["prompt"] == other
