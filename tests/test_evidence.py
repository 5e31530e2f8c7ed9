"""The retrieval stages (assistant/evidence.py) on a tiny corpus with BM25: each changes what the model is
shown exactly as its setting says, and a variant turns it on through the one prompt path (Bot.prepare)."""

from __future__ import annotations

import json

import pytest

from assistant.context import ContextError, chunk_document
from assistant.evidence import Evidence, EvidenceSettings, expanded, fuse_with_votes, pack
from assistant.retrieval import Retriever

DOCS = {
    "kettle.md": "# Kettle\n\n## Heating\n\nThe kettle heats water to 212 degrees.\n\n"
                 "## Cleaning\n\nDescale the kettle with vinegar every month.\n\nRinse it twice afterwards.",
    "grinder.md": "# Grinder\n\n## Settings\n\nThe grinder has 30 settings for water-free grinding.\n\n"
                  "## Cleaning\n\nBrush the burrs weekly.",
    "returns.md": "# Returns\n\n## Window\n\nReturn water kettles and grinders within 30 days.",
}


def corpus():
    passages = []
    for name, text in DOCS.items():
        passages += chunk_document(name, text, max_words=8)  # small passages: one or two sentences each
    return passages


def test_expansion_gives_the_section_or_the_whole_document():
    passages = corpus()
    rinse = next(p for p in passages if "Rinse" in p.text)
    assert expanded(rinse, passages, "passage") is rinse
    section = expanded(rinse, passages, "section")
    assert section.heading == "Kettle > Cleaning" and "Descale" in section.text and "Rinse" in section.text
    assert "212" not in section.text
    document = expanded(rinse, passages, "document")
    assert document.source == "kettle.md" and all(w in document.text for w in ("212", "Descale", "Rinse"))
    assert "## Kettle > Heating" in document.text  # a document keeps its sections' headings


def test_packing_respects_top_k_the_word_budget_and_shows_nothing_twice():
    passages = corpus()
    order = list(range(len(passages)))
    assert pack(order, passages, 2, "passage", None) == passages[:2]
    documents = pack(order, passages, 5, "document", None)
    assert [p.source for p in documents] == ["kettle.md", "grinder.md", "returns.md"]  # each document once
    words = [len(p.text.split()) for p in passages]
    budget = words[0] + words[1]
    assert pack(order, passages, 5, "passage", budget) == passages[:2]
    # A document that does not fit the words left is replaced by its passage alone.
    small = pack(order, passages, 1, "document", words[0])
    assert small == [passages[0]]
    # Not even the best passage fits: it is shown all the same, alone.
    assert pack(order, passages, 3, "passage", 1) == [passages[0]]


def test_conversation_votes_move_the_voted_document_first(tmp_path):
    passages = corpus()
    retriever = Retriever(passages, "bm25")
    question = "Is water okay?"  # every document mentions water; BM25 alone ranks the kettle first
    plain = Evidence(retriever, EvidenceSettings(top_k=1)).find(question).passages
    assert plain[0].source == "kettle.md"
    conversations = tmp_path / "past.jsonl"
    conversations.write_text("\n".join(json.dumps(row) for row in [
        {"messages": [{"role": "user", "content": "Is water okay for my grinder?"},
                      {"role": "assistant", "content": "Grind dry."}], "source": "grinder.md"},
        {"messages": [{"role": "user", "content": "How long do returns take?"},
                      {"role": "assistant", "content": "30 days."}], "source": "returns.md"},
        {"messages": [{"role": "user", "content": "no source here"}]},
    ]) + "\n")
    voted = Evidence(retriever, EvidenceSettings(top_k=1, conversations=conversations, conversations_k=1))
    assert voted.votes.documents(question, 1) == ["grinder.md"]
    assert voted.find(question).passages[0].source == "grinder.md"


def test_fusion_weighs_a_vote_like_a_first_rank():
    passages = corpus()
    grinder = [i for i, p in enumerate(passages) if p.source == "grinder.md"]
    others = [i for i in range(len(passages)) if i not in grinder]
    fused = fuse_with_votes(others + grinder, passages, ["grinder.md"])
    assert fused[: len(grinder)] == grinder  # the voted document's passages, last before, now lead ...
    assert fused[len(grinder):] == others  # ... the rest keep their order, and nothing is lost or added


def test_conversations_naming_unknown_documents_or_none_are_refused(tmp_path):
    retriever = Retriever(corpus(), "bm25")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "source": "nope.md"}) + "\n{oops\n")
    with pytest.raises(ContextError, match=r"bad.jsonl:2: not JSON"):
        Evidence(retriever, EvidenceSettings(conversations=bad))
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "source": "nope.md"}) + "\n")
    with pytest.raises(ContextError, match="nope.md"):
        Evidence(retriever, EvidenceSettings(conversations=bad))
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ContextError, match="no conversation names"):
        Evidence(retriever, EvidenceSettings(conversations=bad))


class ScriptedReranker:
    """Scores one passage text above the rest: a stand-in for a cross-encoder's judgement."""

    def __init__(self):
        self.favourite, self.seen = None, []

    def scores(self, query, texts):
        self.seen.append(len(texts))
        return [float(t.endswith(self.favourite)) for t in texts]


def test_reranking_reorders_only_the_candidates_it_scores():
    passages = corpus()
    evidence = Evidence(Retriever(passages, "bm25"), EvidenceSettings(top_k=2, rerank_candidates=3))
    evidence.reranker = ScriptedReranker()
    question = "kettle grinder cleaning water"
    ranked, _ = evidence.retriever.ranked(question, 100)
    head = [passages[i] for i in ranked[:4]]
    evidence.reranker.favourite = head[2].text  # the third candidate, to come first
    assert evidence.find(question).passages == [head[2], head[0]]
    assert evidence.reranker.seen == [3]  # only the candidates were scored
    evidence.reranker.favourite = head[3].text  # beyond the candidates: it cannot be moved up
    assert evidence.find(question).passages == [head[0], head[1]]


def test_a_variant_turns_the_stages_on_through_prepare(tmp_path, tiny_model_dir):
    from assistant.generate import Bot
    from assistant.variants import load_variant

    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    (tmp_path / "past.jsonl").write_text(json.dumps(
        {"messages": [{"role": "user", "content": "Is water okay for my grinder?"}], "source": "grinder.md"}) + "\n")
    settings = {"model": {"base": str(tiny_model_dir), "quantization": "none"},
                "prompt": {"template": "support.j2", "variables": {"company": "Tide", "persona": "a helper",
                                                                    "tone": "Be brief."}},
                "generation": {"max_new_tokens": 16},
                "context": {"documents": "docs", "retriever": "bm25", "top_k": 1, "chunk_words": 10}}
    history = [{"role": "user", "content": "Is water okay?"}]
    plain = Bot(load_variant(settings, root=tmp_path)).prepare(history)
    staged_variant = load_variant(settings, ["context.conversations=past.jsonl", "context.expand=document"],
                                  root=tmp_path)
    staged = Bot(staged_variant).prepare(history)
    assert plain.passages[0].source == "kettle.md"
    assert [p.source for p in staged.passages] == ["grinder.md"] and "Brush the burrs" in staged.passages[0].text
    assert "Brush the burrs" in staged.text
    assert staged_variant.variant_hash() != load_variant(settings, root=tmp_path).variant_hash()
