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
    ask about topics no training question covers, so they test whether abstaining generalises."""
    train = {row["id"]: row for row in rows("train.jsonl") + rows("unanswerable-train.jsonl")}
    train_questions = {re.sub(r"\W+", " ", m["content"].lower()).strip()
                       for row in train.values() for m in row["messages"] if m["role"] == "user"}
    for case in rows("eval.jsonl"):
        question = case["messages"][0]["content"]
        assert case["reference"].strip() and case["intent"] in INTENTS and case["sentiment"] in SENTIMENTS
        assert re.sub(r"\W+", " ", question.lower()).strip() not in train_questions, case["id"]
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


@pytest.mark.parametrize("field,values", [("intent", INTENTS), ("sentiment", SENTIMENTS)])
def test_every_label_is_used(field, values):
    assert {c[field] for c in rows("eval.jsonl")} == values
    assert {m[field] for r in rows("train.jsonl") for m in r["messages"] if m["role"] == "user"} == values
