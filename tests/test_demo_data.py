"""The demo domain's data keeps its contract: sizes, labels, alternation, and no leakage into evaluation."""

import json
import re

import pytest

from tests.conftest import ROOT

DATA = ROOT / "data" / "tidewater"
INTENTS = {"order_status", "shipping", "returns", "refund", "warranty", "billing", "product_info",
           "troubleshooting", "subscription", "account", "promotions", "other"}
SENTIMENTS = {"positive", "neutral", "negative"}


def rows(name):
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def words(text):
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_documents_and_sizes():
    assert len(list((DATA / "docs").glob("*.md"))) >= 25
    assert len(rows("train.jsonl")) >= 300
    assert len(rows("eval.jsonl")) >= 80


def test_unanswerable_cases_abstain_in_their_reference_and_nowhere_else():
    from assistant.facts import abstains

    unanswerable = [c for c in rows("eval.jsonl") if "unanswerable" in c["tags"]]
    assert len(unanswerable) >= 20
    assert all(abstains(c["reference"]) == ("unanswerable" in c["tags"]) for c in rows("eval.jsonl"))
    assert all(abstains(r["messages"][-1]["content"]) for r in rows("unanswerable-train.jsonl"))
    assert not any(abstains(m["content"]) for r in rows("train.jsonl") for m in r["messages"] if m["role"] == "assistant")


def test_training_conversations_alternate_and_every_customer_message_is_labelled():
    seen = set()
    for row in rows("train.jsonl") + rows("unanswerable-train.jsonl"):
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2), row["id"]
        for m in row["messages"]:
            assert m["content"].strip()
            if m["role"] == "user":
                assert m["intent"] in INTENTS and m["sentiment"] in SENTIMENTS, row["id"]
        assert (DATA / "docs" / row["source"]).is_file()
        assert row["id"] not in seen
        seen.add(row["id"])


def test_eval_cases_paraphrase_training_questions_without_copying():
    """Answerable cases paraphrase a training question; unanswerable ones (their answer is in no document)
    ask about topics no training question covers, so they test whether abstaining generalises. Multi-turn
    cases have their own test below."""
    train = {row["id"]: row for row in rows("train.jsonl") + rows("unanswerable-train.jsonl")}
    train_questions = {re.sub(r"\W+", " ", m["content"].lower()).strip()
                       for row in train.values() for m in row["messages"] if m["role"] == "user"}
    for case in rows("eval.jsonl"):
        question = case["messages"][0]["content"]
        assert case["reference"].strip() and case["intent"] in INTENTS and case["sentiment"] in SENTIMENTS
        assert re.sub(r"\W+", " ", question.lower()).strip() not in train_questions, case["id"]
        if "multi-turn" in case["tags"]:
            assert "paraphrase_of" not in case
            continue
        if "unanswerable" in case["tags"] or "unseen" in case["tags"]:
            assert "paraphrase_of" not in case
            assert max(len(words(question) & words(q)) / len(words(question) | words(q)) for q in train_questions) < 0.6
            continue
        assert case["source"] == train[case["paraphrase_of"]]["source"] and "paraphrase" in case["tags"]
        original = train[case["paraphrase_of"]]["messages"][0]["content"]
        a, b = words(question), words(original)
        assert len(a & b) / len(a | b) < 0.6, case["id"]
        if "keyword" in case:
            assert case["keyword"].lower() in case["reference"].lower()


def test_unseen_cases_ask_for_facts_no_training_reply_states():
    """The `unseen` cases are written from the documents: each reference states a checkable fact of its source
    document that no training reply of that document states, so retrieval must find it in the documents."""
    from assistant.facts import extract_facts

    replies: dict[str, set] = {}
    for row in rows("train.jsonl"):
        for m in row["messages"]:
            if m["role"] == "assistant":
                replies.setdefault(row["source"], set()).update(extract_facts(m["content"]))
    unseen = [c for c in rows("eval.jsonl") if "unseen" in c["tags"]]
    assert len(unseen) >= 30
    for case in unseen:
        document = (DATA / "docs" / case["source"]).read_text(encoding="utf-8")
        new = {f for f in extract_facts(case["reference"]) - replies.get(case["source"], set()) if f[0] != "answer"}
        assert new & extract_facts(document), case["id"]


def test_multi_turn_cases_answer_the_last_turn_of_a_conversation():
    """The `multi-turn` cases hold a conversation so far, earlier support answers included, and a reference for
    its last user turn: a follow-up that only makes sense with the history, a switch to another topic, or a
    correction of what the customer said before. So they test whether the assistant reads the history."""
    from assistant.facts import extract_facts

    kinds = {"follow-up", "topic-switch", "correction"}
    train_questions = {re.sub(r"\W+", " ", m["content"].lower()).strip()
                       for row in rows("train.jsonl") + rows("unanswerable-train.jsonl")
                       for m in row["messages"] if m["role"] == "user"}
    multi = [c for c in rows("eval.jsonl") if "multi-turn" in c["tags"]]
    assert len(multi) >= 30
    assert {kind for c in multi for kind in c["tags"] if kind in kinds} == kinds
    for case in multi:
        roles = [m["role"] for m in case["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"], case["id"]
        assert 2 <= roles.count("user") <= 4, case["id"]
        assert all(m["content"].strip() for m in case["messages"]), case["id"]
        assert (DATA / "docs" / case["source"]).is_file(), case["id"]
        assert len(kinds & set(case["tags"])) == 1, case["id"]
        last = case["messages"][-1]["content"]
        assert re.sub(r"\W+", " ", last.lower()).strip() not in train_questions, case["id"]
        # a checkable fact: an amount, a number with its unit, a duration, a code (not only a name or a yes/no)
        assert {f for f in extract_facts(case["reference"]) if f[0] not in ("name", "answer")}, case["id"]


@pytest.mark.parametrize("field,values", [("intent", INTENTS), ("sentiment", SENTIMENTS)])
def test_every_label_is_used(field, values):
    assert {c[field] for c in rows("eval.jsonl")} == values
    assert {m[field] for r in rows("train.jsonl") for m in r["messages"] if m["role"] == "user"} == values
