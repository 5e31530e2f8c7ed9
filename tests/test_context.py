import pytest

from assistant.context import BM25Index, ContextError, Passage, Retriever, chunk_document, load_documents, trim_history

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


def test_bm25_ranks_the_relevant_passage_first_with_stemming():
    passages = chunk_document("returns.md", DOC, max_words=60) + [
        Passage("errors.md", "E3", "Error E3 means the boiler needs descaling."),
    ]
    index = BM25Index(passages)
    assert index.search("how many days to RETURNING my grinder", 1)[0].heading == "Returns Policy > Window"
    assert index.search("what is error E3", 1)[0].source == "errors.md"
    assert index.search("zzzz qqqq", 3) == []


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


def test_dense_and_hybrid_retrieval_offline(tmp_path, monkeypatch):
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
    assert hybrid.search("how long does delivery to Canada take", 1)[0].source == "ship.md"
    cached = list((tmp_path / "embeddings").glob("*.safetensors"))
    assert len(cached) == 1  # the second index reused the first one's embeddings
    import torch

    assert torch.allclose(hybrid.dense.matrix, dense.dense.matrix)


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
