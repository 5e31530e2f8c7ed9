"""What the model is shown for a question: the retriever's ranking of passages, then the stages a variant
turns on, in this order:

1. **Votes of past conversations** (``context.conversations``): the past questions most like this one vote
   for the documents that answered them (their ``source``); every passage of a voted document moves ahead of
   the passages of documents with no vote, by reciprocal-rank fusion of the passage ranking and the vote.
   A domain's own questions name its documents far better than the words of a passage do.
2. **Reranking** (``context.rerank``): a cross-encoder trained on the domain re-scores the first candidates,
   reading question and passage together.
3. **Expansion and packing** (``context.expand``, ``context.max_words``): each passage in rank order is
   replaced by its whole section or document when that fits the word budget (else it is shown alone), and
   nothing is shown twice, until ``top_k`` pieces are taken or the budget is full.

Every stage is off by default, and then the model sees the retriever's top-k passages, as before.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from assistant.artifacts import cache_dir
from assistant.context import ContextError, Passage
from assistant.retrieval import FUSION_DEPTH, Retrieval, Retriever

RRF_CONSTANT = 60
"""Reciprocal rank fusion's constant (Cormack et al., 2009), as the hybrid retriever uses."""


def read_conversation_sources(path: Path) -> list[tuple[str, str]]:
    """``(question, source document)`` of every user message in a JSONL file of past conversations whose rows
    name a ``source``; rows without one are skipped. Bad rows are reported with their line, all at once."""
    if not Path(path).is_file():
        raise ContextError(f"{path}: no such conversations file (context.conversations)")
    pairs: list[tuple[str, str]] = []
    problems: list[str] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{number}: not JSON ({exc.msg})")
            continue
        source = row.get("source") if isinstance(row, dict) else None
        if not source:
            continue
        messages = row.get("messages")
        if not isinstance(messages, list):
            problems.append(f"{path}:{number}: a row with a 'source' needs 'messages'")
            continue
        pairs += [(m["content"], str(source)) for m in messages
                  if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)]
    if problems:
        raise ContextError(f"{len(problems)} problem(s) in the conversations:\n  " + "\n  ".join(problems[:20]))
    if not pairs:
        raise ContextError(f"{path}: no conversation names its 'source' document, so none can vote")
    return pairs


class ConversationVotes:
    """Past questions, searched like passages, that vote for the documents which answered them."""

    def __init__(self, pairs: Sequence[tuple[str, str]], method: str, embedder: Path | None, index: Path):
        self.sources = [source for _, source in pairs]
        questions = [Passage(f"question {i}", "", question) for i, (question, _) in enumerate(pairs)]
        self.retriever = Retriever(questions, method, index=index, embedder=embedder)

    def documents(self, query: str, k: int) -> list[str]:
        """Documents in vote order: each of the ``k`` most similar past questions gives its document
        1 / (rank + 1); documents with no vote are left out."""
        ranked, _ = self.retriever.ranked(query, k)
        votes: dict[str, float] = {}
        for rank, i in enumerate(ranked):
            votes[self.sources[i]] = votes.get(self.sources[i], 0.0) + 1.0 / (rank + 1)
        return sorted(votes, key=lambda source: -votes[source])


class CrossEncoderReranker:
    """A cross-encoder folder (``assistant train-retriever`` with kind cross-encoder) scoring (question, passage)
    pairs; the model loads on first use (``assistant.reranking``)."""

    def __init__(self, folder: Path):
        if not (Path(folder) / "config.json").is_file():
            raise ContextError(f"{folder}: not a cross-encoder folder (no config.json); train one with "
                               "assistant train-retriever and kind: cross-encoder")
        self.folder = Path(folder)

    def scores(self, query: str, texts: list[str]) -> list[float]:
        from assistant.reranking import rerank_scores

        return rerank_scores(self.folder, query, texts)


def fuse_with_votes(ranking: list[int], passages: Sequence[Passage], voted: list[str]) -> list[int]:
    """The passage ranking fused with the documents' vote order by reciprocal rank: a passage of the
    first-voted document gains as much as being the first-ranked passage."""
    place = {source: rank for rank, source in enumerate(voted)}
    score = {i: 1.0 / (RRF_CONSTANT + rank + 1) for rank, i in enumerate(ranking)}
    for i in ranking:
        if passages[i].source in place:
            score[i] += 1.0 / (RRF_CONSTANT + place[passages[i].source] + 1)
    return sorted(ranking, key=lambda i: -score[i])


def expanded(passage: Passage, passages: Sequence[Passage], how: str) -> Passage:
    """The passage itself, its section (every passage under the same heading) or its whole document, as one
    passage; a document's sections keep their headings in its text."""
    if how == "passage":
        return passage
    same = [p for p in passages if p.source == passage.source and (how == "document" or p.heading == passage.heading)]
    if how == "section":
        return Passage(passage.source, passage.heading, "\n\n".join(p.text for p in same))
    parts, heading = [], None
    for p in same:
        if p.heading != heading and p.heading:
            parts.append(f"## {p.heading}")
        heading = p.heading
        parts.append(p.text)
    return Passage(passage.source, "whole document", "\n\n".join(parts))


def pack(ranking: list[int], passages: Sequence[Passage], top_k: int, expand: str,
         max_words: int | None) -> list[Passage]:
    """Up to ``top_k`` pieces in rank order: each passage expanded as ``expand`` says when that fits the words
    left (else the passage alone, else nothing more), a section or document shown once."""
    shown: list[Passage] = []
    covered: set[int] = set()  # positions of passages already inside a shown piece
    left = max_words if max_words is not None else float("inf")
    for i in ranking:
        if len(shown) >= top_k or left <= 0:
            break
        if i in covered:
            continue
        for how in dict.fromkeys((expand, "passage")):  # the expansion first, then the passage alone
            piece = expanded(passages[i], passages, how)
            words = len(piece.text.split())
            if words <= left:
                inside = {j for j, p in enumerate(passages) if p.source == piece.source and (
                    how == "document" or (how == "section" and p.heading == piece.heading))} | {i}
                if inside & covered and how != "passage":
                    continue  # part of it is shown already: the passage alone, not the piece again
                shown.append(piece)
                covered |= inside
                left -= words
                break
        else:
            if max_words is not None and not shown:  # not even the best passage fits: show it all the same
                shown.append(passages[i])
                break
    return shown


@dataclass
class EvidenceSettings:
    """The ``context`` settings the stages read, as plain values (paths resolved)."""

    top_k: int = 3
    conversations: Path | None = None
    conversations_k: int = 5
    rerank: Path | None = None
    rerank_candidates: int = 20
    expand: str = "passage"
    max_words: int | None = None
    embedder: Path | None = None


class Evidence:
    """A retriever and the stages a variant turns on: ``find(query)`` gives what the model is shown."""

    def __init__(self, retriever: Retriever, settings: EvidenceSettings):
        self.retriever, self.settings = retriever, settings
        self.votes = None
        if settings.conversations:
            pairs = read_conversation_sources(settings.conversations)
            known = {p.source for p in retriever.passages}
            unknown = sorted({source for _, source in pairs} - known)
            if unknown:
                raise ContextError(f"{settings.conversations}: 'source' names documents that are not among the "
                                   f"documents: {', '.join(unknown[:5])}")
            name = hashlib.sha256(f"{Path(settings.conversations).resolve()}|{settings.embedder}".encode()).hexdigest()
            self.votes = ConversationVotes(pairs, retriever.method, settings.embedder,
                                           cache_dir() / "conversation-index" / name[:16])
        self.reranker = CrossEncoderReranker(settings.rerank) if settings.rerank else None

    @property
    def passages(self) -> list[Passage]:
        return self.retriever.passages

    def find(self, query: str) -> Retrieval:
        """The passages to show for ``query``, best first, and the retriever's relevance of its best one."""
        s = self.settings
        plain = not (self.votes or self.reranker) and s.expand == "passage" and s.max_words is None
        depth = s.top_k if plain else FUSION_DEPTH
        ranking, relevance = self.retriever.ranked(query, depth)
        if self.votes:
            ranking = fuse_with_votes(ranking, self.passages, self.votes.documents(query, s.conversations_k))
        if self.reranker and ranking:
            head = ranking[: s.rerank_candidates]
            scores = self.reranker.scores(query, [f"{self.passages[i].heading}\n{self.passages[i].text}" for i in head])
            ranking = [i for _, i in sorted(zip(scores, head), key=lambda pair: -pair[0])] + ranking[len(head):]
        return Retrieval(pack(ranking, self.passages, s.top_k, s.expand, s.max_words), relevance)
