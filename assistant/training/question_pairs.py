"""Training pairs for a domain retriever: (question, the passage that answers it, hard negatives), from labelled
conversations or from questions a base model drafts for each passage. No model loads here except the drafter.

- Labelled conversations: each user turn answered by the assistant is a question, written as the served
  retriever searches with it (``context.retrieval_query``: the turn, after the one before it for a follow-up).
  Its row's ``source`` names the document. The positive is that document's passage that best matches the
  ANSWER, by BM25 over the document's own passages (so the words that set one of its passages apart from the
  others decide); the hard negatives are the passages BM25 ranks highest for the question among the other
  documents: the confusions a keyword retriever makes.
- Drafted questions (documents without conversations): the base model writes questions for each passage, and
  a question is kept only when BM25 over every passage brings its passage's document back among the first
  three (a round trip): a question the passage does not answer, or too vague to find it by, is dropped. The
  positive is the passage it was drafted from.

A question knows its conversation (or drafted passage), so the held-out split never puts turns of one
conversation on both sides.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from assistant.context import Passage, retrieval_query
from assistant.data import DataError, example_messages, format_problems, read_jsonl
from assistant.retrieval import BM25Index, top_indices

ROUND_TRIP_DEPTH = 3
"""A drafted question is kept when its passage's document is among this many BM25 results for it."""


@dataclass(frozen=True)
class Question:
    text: str
    """What the retriever searches with."""
    source: str
    """The document that answers it (file name relative to the documents folder)."""
    where: str
    """'file:line' of its conversation, or the passage it was drafted from."""
    group: int
    """Its conversation (or drafted passage): the held-out split keeps a group on one side."""
    answer: str = ""
    """The assistant's reply to it (labelled conversations)."""
    passage: Passage | None = None
    """The passage it was drafted from (drafted questions): the positive."""


@dataclass
class Pair:
    question: Question
    positive: Passage
    negatives: list[Passage]


@dataclass
class LabelledQuestions:
    questions: list[Question]
    rows: int
    """Conversations read."""
    skipped_no_source: int
    """Rows without a ``source``."""
    skipped_unknown_document: int
    """Rows whose ``source`` is a file of the documents folder that holds no passage (empty, or not a
    Markdown or text file)."""


def read_labelled_questions(path: Path, documents: Path, passages: Sequence[Passage],
                            turns: str = "first") -> LabelledQuestions:
    """The questions of a JSONL file of conversations (any format ``assistant.data`` reads) whose rows name
    their ``source`` document.

    Args:
        path: the training rows.
        documents: the documents folder ``source`` is relative to.
        passages: the documents' passages.
        turns: 'first': each conversation's first user message; 'all': every user message answered.

    Raises:
        DataError: every row that does not parse, is not a complete conversation, or whose ``source`` names
            no file of the documents folder, each with file:line.
    """
    records, problems = read_jsonl(path)
    known = {p.source for p in passages}
    root = Path(documents).resolve()
    questions: list[Question] = []
    no_source = unknown = 0
    for group, record in enumerate(records):
        messages, problem = example_messages(record)
        if problem:
            problems.append(f"{record.where}: not a complete example ({problem})")
            continue
        source = record.row.get("source")
        if source is None or source == "":
            no_source += 1
            continue
        if not isinstance(source, str):
            problems.append(f"{record.where}: 'source' must be a document's file name, got {source!r}")
            continue
        file = (root / source).resolve()
        if not file.is_relative_to(root) or not file.is_file():
            problems.append(f"{record.where}: source {source!r} is no file of the documents folder {root}")
            continue
        if file.relative_to(root).as_posix() not in known:
            unknown += 1
            continue
        for i, message in enumerate(messages):
            if message["role"] != "user" or i + 1 >= len(messages) or messages[i + 1]["role"] != "assistant":
                continue
            questions.append(Question(retrieval_query(messages[: i + 1]), file.relative_to(root).as_posix(),
                                      record.where, group, answer=messages[i + 1]["content"]))
            if turns == "first":
                break
    if problems:
        raise DataError(format_problems(problems))
    return LabelledQuestions(questions, len(records), no_source, unknown)


def split_questions(questions: list[Question], fraction: float, seed: int) -> tuple[list[Question], list[Question]]:
    """(training, held out): a seeded share ``fraction`` of the groups (conversations) held out whole."""
    groups = sorted({q.group for q in questions})
    random.Random(seed).shuffle(groups)
    held = set(groups[: round(len(groups) * fraction)]) if fraction > 0 else set()
    return [q for q in questions if q.group not in held], [q for q in questions if q.group in held]


class PairBuilder:
    """Positives and hard negatives over one collection of passages (BM25 indexes built once)."""

    def __init__(self, passages: Sequence[Passage]):
        self.passages = list(passages)
        self.everything = BM25Index(self.passages)
        self._documents: dict[str, BM25Index] = {}

    def document_index(self, source: str) -> BM25Index:
        if source not in self._documents:
            self._documents[source] = BM25Index([p for p in self.passages if p.source == source])
        return self._documents[source]

    def positive(self, question: Question) -> Passage:
        """The drafted-from passage, else the source document's passage that best matches the answer (by the
        question when no word of the answer is in the document)."""
        if question.passage is not None:
            return question.passage
        index = self.document_index(question.source)
        for text in (question.answer, question.text):
            scores = index.scores(text)
            if scores.max(initial=0) > 0:
                return index.passages[int(top_indices(scores, 1)[0])]
        return index.passages[0]

    def negatives(self, question: Question, count: int) -> list[Passage]:
        """The ``count`` passages of other documents that BM25 ranks highest for the question."""
        if count <= 0:
            return []
        ranking = top_indices(self.everything.scores(question.text), len(self.passages))
        return [self.passages[i] for i in ranking if self.passages[i].source != question.source][:count]

    def pairs(self, questions: Sequence[Question], hard_negatives: int) -> list[Pair]:
        """One pair per question; every pair gets the same number of negatives (fewer than ``hard_negatives``
        only when the other documents hold fewer passages)."""
        pairs = [Pair(q, self.positive(q), self.negatives(q, hard_negatives)) for q in questions]
        fewest = min((len(p.negatives) for p in pairs), default=0)
        for pair in pairs:
            del pair.negatives[fewest:]
        return pairs

    def round_trip(self, passage: Passage, question: str, depth: int = ROUND_TRIP_DEPTH) -> bool:
        """Whether BM25 over every passage finds ``passage``'s document among the first ``depth`` for it."""
        scores = self.everything.scores(question)
        return any(scores[i] > 0 and self.passages[i].source == passage.source for i in top_indices(scores, depth))


# -- drafting questions from passages ----------------------------------------------------------------------

DRAFT_REQUEST = ("Passage ({where}):\n{text}\n\nWrite {count} different questions that a customer could ask and "
                 "that this passage answers. Write one question per line, each ending with a question mark, and "
                 "nothing else.")

_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|Q\d*[:.]|Question\s*\d*[:.])\s*", re.IGNORECASE)


def parse_questions(text: str, limit: int) -> list[str]:
    """The questions in a drafted reply: one per line, list markers dropped, ending with '?' and at least three
    words long (a small model also echoes the passage's heading or sentences, which would make the round trip
    all too well), no repeats; at most ``limit``."""
    found: list[str] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip().strip('"').strip()
        if line.endswith("?") and len(line.split()) >= 3 and line not in found:
            found.append(line)
    return found[:limit]


def draft_questions(passages: Sequence[Passage], base: str, quantization: str, count: int, max_new_tokens: int,
                    quiet: bool = False) -> list[list[str]]:
    """Questions the base model writes for each passage (greedy decoding, through ``Bot``, the project's one
    generation path), in passage order.

    Args:
        base: the drafting model: the embedded default, a catalog name, a hub id or a local folder.
        quantization: 'nf4' or 'none' (the transformers engine; llama.cpp runs the model's GGUF as it is).
        count: questions asked for per passage.
    """
    from tqdm.auto import tqdm

    from assistant.generate import Bot
    from assistant.retrieval import passage_text
    from assistant.variants import load_variant

    writer = Bot(load_variant(None, {"model.base": base, "model.quantization": quantization,
                                     "prompt.template": "plain.j2", "generation.temperature": 0.0,
                                     "generation.max_new_tokens": max_new_tokens}))
    requests = [[{"role": "user", "content": DRAFT_REQUEST.format(count=count, where=p.cite(), text=passage_text(p))}]
                for p in passages]
    drafted: list[list[str]] = []
    batch = 8
    with tqdm(total=len(requests), desc="drafting questions", unit="passage", disable=quiet) as bar:
        for start in range(0, len(requests), batch):
            for reply in writer.reply_batch(requests[start : start + batch], batch_size=batch):
                drafted.append(parse_questions(reply.text, count))
            bar.update(len(requests[start : start + batch]))
    return drafted


@dataclass
class DraftedQuestions:
    questions: list[Question]
    """The drafts that made the round trip."""
    drafted: int
    """Questions parsed from the drafts."""
    rejected: list[tuple[str, str]]
    """(passage, question) of the drafts that did not come back to their passage's document."""


def keep_round_trips(builder: PairBuilder, drafts: Sequence[Sequence[str]]) -> DraftedQuestions:
    """The drafted questions (``drafts[i]`` written for ``builder.passages[i]``) whose passage's document BM25
    finds again in its top three."""
    kept, rejected, total = [], [], 0
    for group, (passage, questions) in enumerate(zip(builder.passages, drafts)):
        for text in questions:
            total += 1
            if builder.round_trip(passage, text):
                kept.append(Question(text, passage.source, passage.cite(), group, passage=passage))
            else:
                rejected.append((passage.cite(), text))
    return DraftedQuestions(kept, total, rejected)
