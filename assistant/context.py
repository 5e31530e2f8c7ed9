"""Contextualization: domain documents cut into passages, the text to retrieve them with, and conversation
history trimmed to a token budget.

Documents are Markdown or text files. Each is cut at its headings, and a section longer than the passage
size is cut again at paragraph breaks, so that a passage is a piece a person would quote and always knows
its source file and heading. Ranking passages for a query is ``assistant.retrieval``'s job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DOCUMENT_SUFFIXES = (".md", ".markdown", ".txt")


class ContextError(ValueError):
    """Documents or budget problems a user must fix."""


@dataclass(frozen=True)
class Passage:
    source: str
    """Document file, relative to the documents folder."""
    heading: str
    """The nearest heading above the passage ('' when the document has none)."""
    text: str

    def cite(self) -> str:
        return f"{self.source} - {self.heading}" if self.heading else self.source


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def chunk_document(source: str, text: str, max_words: int = 120) -> list[Passage]:
    """Cuts one document into passages at headings, then at paragraph breaks.

    Paragraphs of a section are packed together up to ``max_words``; a single paragraph longer than that
    is split at sentence ends. The heading path ('Returns > Damaged items') names each passage.
    """
    sections: list[tuple[str, list[str]]] = []
    trail: list[str] = []
    lines: list[str] = []
    for line in text.splitlines():
        match = _HEADING.match(line)
        if match:
            sections.append((" > ".join(trail), lines))
            level = len(match.group(1))
            trail = trail[: level - 1] + [match.group(2)]
            lines = []
        else:
            lines.append(line)
    sections.append((" > ".join(trail), lines))

    passages = []
    for heading, body in sections:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", "\n".join(body)) if p.strip()]
        pieces: list[str] = []
        for paragraph in paragraphs:
            pieces.extend(_split_long(paragraph, max_words))
        packed: list[str] = []
        for piece in pieces:
            if packed and len(packed[-1].split()) + len(piece.split()) <= max_words:
                packed[-1] += "\n\n" + piece
            else:
                packed.append(piece)
        passages.extend(Passage(source, heading, chunk) for chunk in packed)
    return passages


def _split_long(paragraph: str, max_words: int) -> list[str]:
    if len(paragraph.split()) <= max_words:
        return [paragraph]
    out: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        if out and len(out[-1].split()) + len(sentence.split()) <= max_words:
            out[-1] += " " + sentence
        else:
            out.append(sentence)
    return out


def load_documents(folder: Path, max_words: int = 120) -> list[Passage]:
    """Reads every Markdown/text file under ``folder`` (sorted, recursive) into passages."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ContextError(f"documents folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in DOCUMENT_SUFFIXES and p.is_file())
    if not files:
        raise ContextError(f"documents folder {folder} holds no {'/'.join(DOCUMENT_SUFFIXES)} files")
    passages = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ContextError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        passages.extend(chunk_document(path.relative_to(folder).as_posix(), text, max_words))
    return passages


def retrieval_query(history: list[dict[str, str]], turns: int = 2) -> str:
    """The text to search with: the last user message, plus the one before it for follow-up questions."""
    users = [m["content"] for m in history if m["role"] == "user"]
    return "\n".join(users[-turns:])


def trim_history(
    history: list[dict[str, str]],
    prompt_tokens: Callable[[list[dict[str, str]]], int],
    budget: int,
) -> tuple[list[dict[str, str]], int]:
    """Drops the oldest turns until the rendered prompt fits in ``budget`` tokens.

    The system message is written by the template and never part of ``history``, so it always stays;
    the latest user message always stays too. Turns are dropped from the front a user/assistant pair at a
    time so the conversation still starts with the user.

    Args:
        history: messages ending with the user's latest one.
        prompt_tokens: renders a history into the full prompt and counts its tokens.
        budget: tokens allowed for the prompt (context window minus the reserved answer length).

    Returns:
        The kept history and how many messages were dropped.

    Raises:
        ContextError: the prompt does not fit even with only the latest message.
    """
    start = 0
    while True:
        kept = history[start:]
        used = prompt_tokens(kept)
        if used <= budget:
            return kept, start
        if len(kept) <= 1:
            raise ContextError(
                f"the prompt needs {used} tokens with only the latest message, over the budget of {budget} "
                "(shorten the message, retrieve fewer passages, or lower generation.max_new_tokens)"
            )
        start += 1
        while start < len(history) - 1 and history[start]["role"] != "user":
            start += 1


def cited_numbers(answer: str, count: int) -> list[int]:
    """The passage numbers an answer cites as [n] (as support-cited.j2 asks), in order of first citation,
    among 1..count; [1, 3] and [1][3] both cite 1 and 3."""
    import re

    found: list[int] = []
    for group in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", answer):
        for number in (int(n) for n in re.split(r"\s*,\s*", group)):
            if 1 <= number <= count and number not in found:
                found.append(number)
    return found
