"""Preference pairs without voters: several sampled answers to each training question, ranked by the fact
metrics, the best and the worst kept as a pair for DPO.

    assistant feedback sample --variant adapters/tidewater-multitask/variant.yaml \
        --data data/tidewater/train.jsonl --samples 4 --out feedback/sampled-pairs.jsonl
    assistant train --method dpo --from adapters/tidewater-multitask --pairs feedback/sampled-pairs.jsonl

Each answer is scored against what the training row says is right and against what the model was shown:

    score = reference facts stated - reference facts contradicted - facts the prompt does not support

(``assistant/facts.py``: numbers with units, money, percentages, durations, dates, names, a yes/no). A
question whose samples all score the same gives no pair: the metrics cannot tell them apart, and a pair
chosen by chance would teach noise. The pairs have the shape `assistant feedback export` writes, with
the scores in their provenance, so the DPO step reads votes and sampled pairs alike.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from assistant.config import Variant
from assistant.data import DataError, read_jsonl
from assistant.facts import compare_facts, supported_facts


@dataclass(frozen=True)
class Scored:
    """One sampled answer and what the fact metrics found in it."""

    text: str
    stated: int
    """Facts of the reference answer that the answer states."""
    contradicted: int
    """Facts of the reference answer that the answer states with another value."""
    unsupported: int
    """Facts in the answer found neither in the prompt (instructions, passages, history) nor in the reference."""

    @property
    def score(self) -> int:
        return self.stated - self.contradicted - self.unsupported


def score_answer(answer: str, reference: str, prompt_text: str) -> Scored:
    """Scores one answer: reference facts stated and contradicted, and facts with no support. A fact the
    reference states counts as supported, since the training row is the ground truth."""
    _, stated, contradicted = compare_facts(answer, reference)
    claimed, supported = supported_facts(answer, prompt_text + "\n" + reference)
    return Scored(answer, stated, contradicted, claimed - supported)


def best_and_worst(samples: list[Scored]) -> tuple[Scored, Scored] | None:
    """The highest and lowest scoring answers, or None when the scores do not separate two distinct answers.
    Among equal scores the earlier sample wins, so the choice does not depend on anything but the samples."""
    distinct: dict[str, Scored] = {}
    for s in samples:
        if s.text.strip():
            distinct.setdefault(s.text.strip(), s)  # the first sample of each text
    ranked = sorted(distinct.values(), key=lambda s: -s.score)  # stable: equal scores keep sample order
    if len(ranked) < 2 or ranked[0].score == ranked[-1].score:
        return None
    return ranked[0], ranked[-1]


def training_questions(path: Path) -> list[tuple[list[dict[str, str]], str, str]]:
    """``(history, reference answer, where)`` for every assistant turn of a chat JSONL file: the history is
    the conversation up to the user message that turn answers (without any system message)."""
    records, problems = read_jsonl(path)
    if problems:
        raise DataError(f"{len(problems)} problem(s) in {path}:\n  " + "\n  ".join(problems))
    questions = []
    for record in records:
        messages = [m for m in record.messages if m["role"] != "system"]
        for i, m in enumerate(messages):
            if m["role"] == "assistant" and i > 0 and messages[i - 1]["role"] == "user":
                history = [{"role": x["role"], "content": x["content"]} for x in messages[:i]]
                questions.append((history, m["content"], record.where))
    if not questions:
        raise DataError(f"{path}: no assistant answers to sample against (chat rows with 'messages' are needed)")
    return questions


@dataclass
class SampleReport:
    """What a sampling run produced."""

    questions: int = 0
    """Training questions sampled."""
    answers: int = 0
    """Answers sampled, over every question."""
    ties: int = 0
    """Questions whose samples the metrics could not separate (no pair)."""
    chosen_scores: list[int] = field(default_factory=list)
    """The fact score of each pair's chosen answer."""
    rejected_scores: list[int] = field(default_factory=list)
    """The fact score of each pair's rejected answer."""

    @property
    def pairs(self) -> int:
        """Preference pairs written: one per question whose samples scored differently."""
        return len(self.chosen_scores)


def sample_pairs(
    variant: Variant,
    data: Path,
    samples: int = 4,
    temperature: float = 0.8,
    top_p: float = 0.95,
    seed: int = 0,
    limit: int | None = None,
    engine: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], SampleReport]:
    """Samples ``samples`` answers to each training question of ``data`` with ``variant`` and returns the
    preference pairs (``{prompt, chosen, rejected, provenance}``) and a report.

    The answers of one question differ by their seed only (``seed``, ``seed + 1``, ...), so a run is
    repeatable on the same engine. Questions go to the engine a batch at a time, each batch once per seed:
    llama.cpp then finds every prompt's KV state still in its slot and prefills it once, not once per
    sample. ``engine`` overrides the variant's; ``limit`` takes a seeded random subset of the questions (a
    quick look); ``progress`` is called with (questions done, questions in all).
    """
    from assistant.generate import Bot

    if samples < 2:
        raise ValueError("samples: at least 2 answers per question are needed to make a pair")
    questions = training_questions(data)
    if limit is not None and limit < len(questions):
        questions = sorted(random.Random(seed).sample(questions, limit), key=lambda q: q[2])
    bot = Bot(variant, engine)
    batch = max(1, variant.serving.parallel)
    pairs: list[dict[str, Any]] = []
    report = SampleReport(questions=len(questions))
    for start in range(0, len(questions), batch):
        chunk = questions[start : start + batch]
        histories = [history for history, _, _ in chunk]
        shown = [bot.prepare(h).text for h in histories]
        answers: list[list[str]] = [[] for _ in chunk]
        for k in range(samples):
            sampling = bot.sampling(temperature=temperature, top_p=top_p, seed=seed + k)
            for i, reply in enumerate(bot.reply_batch(histories, batch_size=batch, sampling=sampling)):
                answers[i].append(reply.text)
        for (history, reference, where), prompt_text, texts in zip(chunk, shown, answers):
            report.answers += len(texts)
            picked = best_and_worst([score_answer(t, reference, prompt_text) for t in texts])
            if picked is None:
                report.ties += 1
                continue
            best, worst = picked
            report.chosen_scores.append(best.score)
            report.rejected_scores.append(worst.score)
            pairs.append({
                "prompt": history,
                "chosen": best.text,
                "rejected": worst.text,
                "provenance": {"source": "sampled", "row": where, "variant": variant.name,
                               "variant_hash": variant.variant_hash(), "samples": len(texts),
                               "temperature": temperature, "top_p": top_p, "seed": seed,
                               "chosen_score": _facts(best), "rejected_score": _facts(worst)},
            })
        if progress:
            progress(min(start + batch, len(questions)), len(questions))
    return pairs, report


def _facts(s: Scored) -> dict[str, int]:
    return {"score": s.score, "stated": s.stated, "contradicted": s.contradicted, "unsupported": s.unsupported}
