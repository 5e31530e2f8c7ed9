"""The check an answer passes before it is shown (``generation.verify``): its checkable facts (assistant/facts.py)
are looked up in what the model was shown, and a sentence stating a fact found nowhere there is dropped, asked
again, or turns the answer into an abstention. Pure functions over text; ``Bot`` (assistant/generate.py) calls
``check_answer`` on every path to an answer, and generates the retry that ``retry_instruction`` asks for.

A sentence runs to a full stop, question or exclamation mark followed by white space (closing quotes and any
citation marks after the mark stay with it: "30 days. [1]"), or to a line break, so that list items are sentences
too. A decimal point ("$49.99") ends nothing; an abbreviation followed by a space ("e.g. the") does.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Literal

from assistant.facts import extract_facts

VERIFY_MODES = ("off", "drop", "retry", "abstain")
FALLBACK_ABSTENTION = "I can't find that in the information I have, so I won't guess."
"""Said when the variant sets no prompt.variables.abstention (``facts.abstains`` reads it as an abstention)."""
RETRY_INSTRUCTION = ("Use only facts from the passages and instructions above. Your previous answer said {said}, "
                     "which is not in them: leave it out.")

CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")
"""A citation mark as support-cited.j2 asks for it: [1], [2, 3] (``context.cited_numbers`` reads the numbers)."""
_SENTENCE_END = re.compile(rf"[.!?]+[\"'”’)]*(?:\s*{CITATION.pattern})*(?=\s|$)|\n")
_SPACE = re.compile(r"\s*")

Fact = tuple[str, str]


@dataclass
class Verified:
    """An answer after the check: what to show, and what the check found in the generated one."""

    text: str
    """The answer to show."""
    action: Literal["kept", "dropped", "retried", "abstained"] = "kept"
    """'kept': every fact is supported (or the check is off); 'dropped': the sentences with unsupported facts were
    removed; 'retried': a second, greedy answer was kept (its own unsupported sentences removed); 'abstained':
    the abstention text is shown instead."""
    unsupported: list[Fact] = field(default_factory=list)
    """The generated answer's facts found nowhere in what the model was shown, sorted."""
    sentences: list[str] = field(default_factory=list)
    """The generated answer's sentences that state them, as written (stripped)."""

    @property
    def changed(self) -> bool:
        return self.action != "kept"

    def note(self) -> str:
        """One line saying what the check changed ('' when nothing): for the app and the chat command."""
        said = "; ".join(f"“{_plain(s)}”" for s in self.sentences)
        if self.action == "dropped":
            return f"Removed {_sentences(len(self.sentences))} whose facts are not in the sources: {said}"
        if self.action == "retried":
            return f"Answered again: the first answer said {said}, which is not in the sources."
        if self.action == "abstained":
            return f"Not answered: the answer said {said}, which is not in the sources."
        return ""


def _sentences(n: int) -> str:
    return "a sentence" if n == 1 else f"{n} sentences"


def _plain(sentence: str) -> str:
    """A sentence without its citation marks, for quoting."""
    return " ".join(re.sub(r"\s*" + CITATION.pattern, "", sentence).split())


def split_sentences(text: str) -> list[str]:
    """``text`` cut into sentences (see the module's docstring), each with the white space after it, so that
    joining them gives ``text`` back byte for byte."""
    pieces, start = [], 0
    while start < len(text):
        end = _SENTENCE_END.search(text, start)
        stop = _SPACE.match(text, end.end() if end else len(text)).end()
        pieces.append(text[start:stop])
        start = stop
    return pieces


def sentence_facts(sentence: str) -> set[Fact]:
    """The facts a sentence states, read without its citation marks; a leading yes or no is a stance, not a
    fact, and is left out (as ``facts.supported_facts`` does)."""
    return {f for f in extract_facts(CITATION.sub("", sentence)) if f[0] != "answer"}


@functools.lru_cache(maxsize=64)
def _source_facts(sources: str) -> frozenset[Fact]:
    return frozenset(extract_facts(sources))  # a prompt is checked against more than once (the retry, then drop)


def unsupported_sentences(answer: str, sources: str) -> list[tuple[str, set[Fact]]]:
    """Each sentence of ``answer`` that states a fact not in ``sources``, with those facts.

    Args:
        answer: the generated answer.
        sources: everything the model was shown (the rendered prompt: passages, persona, conversation).

    Returns:
        ``(sentence as written, its unsupported facts)`` in the answer's order.
    """
    known = _source_facts(sources)
    found = [(s, sentence_facts(s) - known) for s in split_sentences(answer)]
    return [(s, facts) for s, facts in found if facts]


def drop_unsupported(answer: str, sources: str) -> str:
    """``answer`` without the sentences that state a fact not in ``sources``; every other sentence is kept byte
    for byte, citations included, and a line or paragraph break that ended a dropped sentence ends the one
    before it instead. '' when none is left."""
    flagged = {s for s, _ in unsupported_sentences(answer, sources)}
    kept: list[str] = []
    for sentence in split_sentences(answer):
        if sentence not in flagged:
            kept.append(sentence)
        elif kept and "\n" in sentence[len(sentence.rstrip()):]:
            kept[-1] = kept[-1].rstrip() + sentence[len(sentence.rstrip()):]
    return "".join(kept).strip()


def retry_instruction(answer: str, sources: str) -> str | None:
    """The instruction added to the system message to ask again, quoting what was unsupported; None when every
    fact of ``answer`` is in ``sources``."""
    flagged = unsupported_sentences(answer, sources)
    if not flagged:
        return None
    return RETRY_INSTRUCTION.format(said="; ".join(f'"{_plain(s)}"' for s, _ in flagged))


def check_answer(answer: str, sources: str, mode: str, abstention: str, retried: str | None = None) -> Verified:
    """The answer to show under ``mode``.

    Args:
        answer: the generated answer.
        sources: everything the model was shown for it (the rendered prompt); never the retry's prompt, which
            quotes the unsupported sentences.
        mode: 'off' (nothing is checked), 'drop', 'retry' or 'abstain' (see ``GenerationSettings.verify``).
        abstention: what to say when no sentence is left, or in 'abstain' mode.
        retried: with 'retry', the second answer generated with ``retry_instruction`` (None or empty: none
            was, and the answer's unsupported sentences are dropped).

    Returns:
        The text to show and what was found: with 'retry' the second answer is kept when it states fewer
        unsupported facts than the first; whichever is kept, its unsupported sentences are then dropped, so no
        mode but 'off' shows a fact the sources do not hold.
    """
    if mode not in VERIFY_MODES:
        raise ValueError(f"generation.verify: {mode!r} is none of {', '.join(VERIFY_MODES)}")
    if mode == "off":
        return Verified(answer)
    flagged = unsupported_sentences(answer, sources)
    if not flagged:
        return Verified(answer)
    unsupported = sorted(set().union(*(facts for _, facts in flagged)))
    sentences = [s.strip() for s, _ in flagged]
    if mode == "abstain":
        return Verified(abstention, "abstained", unsupported, sentences)
    action, kept = "dropped", answer
    if mode == "retry" and (retried or "").strip():  # an empty retry states nothing wrong, nor anything
        if len(set().union(*(f for _, f in unsupported_sentences(retried, sources)))) < len(unsupported):
            action, kept = "retried", retried
    text = drop_unsupported(kept, sources)
    return Verified(text, action, unsupported, sentences) if text else \
        Verified(abstention, "abstained", unsupported, sentences)
