"""Passages from documents, history under a budget (assistant.context) and retrieval over them
(assistant.retrieval): BM25, the on-disk embedding index, dense and hybrid search."""

import hashlib
import re

import numpy as np
import pytest

from assistant.context import ContextError, Passage, chunk_document, load_documents, trim_history
from assistant.retrieval import BM25Index, DenseIndex, Retriever

DOC = """# Returns Policy

Intro paragraph about returns.

## Window

You have 30 days from delivery to return a grinder or a machine.

Opened coffee beans cannot be returned.

## Shipping Labels

""" + " ".join(["Labels cost money."] * 40) + """

### Canada

Canadian customers pay $19.95.
"""


def test_chunks_keep_heading_path_and_respect_size():
    passages = chunk_document("returns.md", DOC, max_words=60)
    headings = [p.heading for p in passages]
    assert "Returns Policy" in headings
    assert "Returns Policy > Window" in headings
    assert "Returns Policy > Shipping Labels > Canada" in headings
    window = [p for p in passages if p.heading == "Returns Policy > Window"]
    assert len(window) == 1 and "30 days" in window[0].text and "beans" in window[0].text  # packed together
    labels = [p for p in passages if p.heading == "Returns Policy > Shipping Labels"]
    assert len(labels) == 2 and all(len(p.text.split()) == 60 for p in labels)  # 120 words, split at sentences
    assert all(p.source == "returns.md" for p in passages)


def test_bm25_ranks_the_passage_with_the_rare_query_term_first():
    passages = chunk_document("returns.md", DOC, max_words=60) + [
        Passage("errors.md", "E3", "Error E3 means the boiler needs descaling."),
        Passage("grinder.md", "Grinder", "The grinder and the machine ship with a portafilter and a tamper."),
        Passage("machine.md", "Machine", "The machine and the grinder both ship in one box with the machine manual."),
    ]
    index = BM25Index(passages)
    # 'grinder' and 'machine' are in several passages, 'portafilter' in one: its rarity decides.
    assert index.search("grinder machine portafilter", 1)[0].source == "grinder.md"
    assert index.search("what is error E3", 1)[0].source == "errors.md"
    assert index.search("zzzz qqqq", 3) == []


def test_bm25_stems_so_returns_and_returned_match():
    assert BM25Index([]).tokenize(["returns", "returned", "returning the grinder"]) == [
        ["return"], ["return"], ["return", "grinder"]]  # 'the' is a stop word
    passages = [Passage("a.md", "", "Opened beans cannot be returned."),
                Passage("b.md", "", "Beans are roasted daily.")]
    index = BM25Index(passages)
    assert index.search("returns of beans", 2) == [passages[0], passages[1]]  # 'returns' found 'returned'
    assert BM25Index([]).search("anything", 3) == []


def test_load_documents_reads_folder_and_reports_problems(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\ntext a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("plain b")
    (tmp_path / "ignored.json").write_text("{}")
    passages = load_documents(tmp_path)
    assert [p.source for p in passages] == ["a.md", "sub/b.txt"]
    (tmp_path / "bad.md").write_bytes(b"\xff\xfe bad")
    with pytest.raises(ContextError, match="bad.md: not UTF-8"):
        load_documents(tmp_path)
    with pytest.raises(ContextError, match="does not exist"):
        load_documents(tmp_path / "missing")


class CountingEncoder:
    """Bag-of-words vectors (a word's hash picks its dimension): similar texts share words, no model needed.
    Counts the texts it embeds."""

    name, dimension = "counting-test-encoder", 64

    def __init__(self):
        self.texts: list[str] = []

    def embed(self, texts, batch=32):
        self.texts += texts
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                out[row, hashlib.sha256(word.encode()).digest()[0] % self.dimension] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def _documents(**texts) -> list[Passage]:
    return [p for name, text in texts.items() for p in chunk_document(f"{name}.md", text, max_words=12)]


def test_passage_index_embeds_only_the_documents_that_changed(tmp_path):
    docs = {"ship": "# Shipping\n\nParcels to Canada arrive in five to eight business days.\n\nCustoms are included.",
            "descale": "# Errors\n\nError E3 means the boiler needs descaling.",
            "pause": "# Subscription\n\nYou can pause deliveries of beans for up to three months."}
    encoder = CountingEncoder()
    first = DenseIndex(_documents(**docs), tmp_path, encoder)
    assert sorted(first.last_update.embedded) == ["descale.md", "pause.md", "ship.md"]
    assert first.last_update.passages == len(encoder.texts) == 4

    encoder.texts.clear()
    reopened = DenseIndex(_documents(**docs), tmp_path, encoder)  # a new connection to the same files
    assert reopened.last_update.embedded == [] and encoder.texts == []
    assert reopened.search("boiler descaling error", 1)[0].source == "descale.md"

    docs["pause"] = "# Subscription\n\nPause deliveries of beans for up to six months, or skip one."
    encoder.texts.clear()
    edited = DenseIndex(_documents(**docs), tmp_path, encoder)
    assert edited.last_update.embedded == ["pause.md"] and edited.last_update.removed == []
    assert encoder.texts == ["Subscription\nPause deliveries of beans for up to six months, or skip one."]
    assert "six months" in edited.search("pause deliveries of beans", 1)[0].text

    different = DenseIndex(_documents(**docs), tmp_path, type("Other", (CountingEncoder,), {"name": "other"})())
    assert len(different.last_update.embedded) == 3  # other embeddings: nothing is kept


def test_removed_documents_disappear_from_the_index(tmp_path):
    docs = {"ship": "Parcels to Canada arrive in five to eight business days.",
            "descale": "Error E3 means the boiler needs descaling.",
            "pause": "You can pause deliveries of beans for up to three months."}
    encoder = CountingEncoder()
    DenseIndex(_documents(**docs), tmp_path, encoder)
    del docs["descale"]
    encoder.texts.clear()
    index = DenseIndex(_documents(**docs), tmp_path, encoder)
    assert index.last_update.removed == ["descale.md"] and encoder.texts == []
    found = index.index.search(encoder.embed(["Error E3 means the boiler needs descaling."])[0], 10)
    assert sorted(source for source, _, _ in found) == ["pause.md", "ship.md"]


def test_dense_search_finds_a_paraphrase_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSISTANT_CACHE", str(tmp_path))
    passages = [
        Passage("ship.md", "Shipping", "Parcels to Canada arrive in five to eight business days."),
        Passage("e3.md", "E3", "Error E3 means the boiler needs descaling."),
        Passage("sub.md", "Subscription", "You can pause deliveries of beans for up to three months."),
    ]
    dense = Retriever(passages, "dense")
    # No word in common with the passage: only embeddings can find it.
    assert dense.search("stop my coffee deliveries for a while", 1)[0].source == "sub.md"
    hybrid = Retriever(passages, "hybrid")
    assert hybrid.search("how long does shipping to Canada take", 1)[0].source == "ship.md"
    assert hybrid.dense.last_update.passages == 0  # the second retriever reopened the first one's index
    assert len(list((tmp_path / "passage-index").iterdir())) == 1


def _history(turns: int) -> list[dict[str, str]]:
    history = []
    for i in range(turns):
        history += [{"role": "user", "content": f"question {i} " * 5}, {"role": "assistant", "content": f"answer {i} " * 5}]
    return history + [{"role": "user", "content": "latest question"}]


def test_trim_history_drops_oldest_pairs_first():
    history = _history(4)  # 9 messages
    cost = lambda h: 100 + sum(len(m["content"].split()) for m in h)  # noqa: E731  (100: the system message)
    kept, dropped = trim_history(history, cost, budget=100 + 2 + 10 * 3)
    assert kept[-1]["content"] == "latest question"
    assert kept[0]["role"] == "user"
    assert dropped == 6 and kept == history[6:]
    assert trim_history(history, cost, budget=10_000) == (history, 0)


def test_trim_history_fails_when_latest_message_alone_is_too_long():
    with pytest.raises(ContextError, match="only the latest message"):
        trim_history(_history(2), lambda h: 500, budget=100)
