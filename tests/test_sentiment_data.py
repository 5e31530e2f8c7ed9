"""The sentiment domain built by scripts/fetch_sentiment.py from the VADER ratings (make data-sentiment):
third-party data, fetched at set-up, never committed. A missing set-up step fails here."""

import json
from collections import Counter

from tests.conftest import ROOT

DATA = ROOT / "data" / "sentiment"
LABELS = {"negative", "neutral", "positive"}


def rows(name):
    path = DATA / name
    assert path.is_file(), f"{path} is missing: run `make data-sentiment`"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_train_is_balanced_and_never_amazon():
    train = rows("train.jsonl")
    counts = Counter(r["label"] for r in train)
    assert set(counts) == LABELS and len(set(counts.values())) == 1 and len(train) >= 300


def test_eval_cases_are_held_out_amazon_snippets_labelled_by_their_mean_rating():
    cases = rows("eval.jsonl")
    assert len(cases) >= 150 and all(c["id"].startswith("amazon-") for c in cases)
    assert Counter(c["label"] for c in cases) == {label: len(cases) // 3 for label in LABELS}
    for c in cases:
        assert c["reference"] == c["label"]
        expected = "positive" if c["score"] > 0.5 else "negative" if c["score"] < -0.5 else "neutral"
        assert c["label"] == expected, c["id"]


def test_no_evaluation_text_is_in_training_or_examples():
    evaluation = {c["messages"][-1]["content"].strip().lower() for c in rows("eval.jsonl")}
    train = {r["text"].strip().lower() for r in rows("train.jsonl")}
    shots = [r["messages"] for r in rows("fewshot.jsonl")]
    assert not evaluation & train
    assert not evaluation & {m[0]["content"].strip().lower() for m in shots}
    assert not train & {m[0]["content"].strip().lower() for m in shots}
    assert [m[1]["content"] for m in shots[:3]] == ["negative", "neutral", "positive"]


def test_provenance_is_written_down():
    source = (DATA / "SOURCE.md").read_text(encoding="utf-8")
    assert "vaderSentiment" in source and "3.3.2" in source and "MIT" in source
