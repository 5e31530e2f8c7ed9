"""Scoring: each metric (an ``evaluate`` module from eval/metrics/) over one variant's answers, per case and
as a statistic any resample of the cases can recompute; and the ranking of variants that picks a winner."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from assistant.evaluation.answers import VariantRun
from assistant.evaluation.suite import LABEL_METRICS, Suite


def extract_label(answer: str, labels: list[str]) -> str:
    """The first label named in the answer (as a whole word, any case), or '' when none is."""
    text = answer.lower()
    best, best_at = "", len(text) + 1
    for label in labels:
        match = re.search(rf"(?<![\w-]){re.escape(label.lower())}(?![\w-])", text)
        if match and match.start() < best_at:
            best, best_at = label, match.start()
    return best


@dataclass
class MetricScores:
    """One metric for one variant: per-case values and the statistic that aggregates any subset."""

    name: str
    per_case: list[float]
    statistic: Callable
    estimate: Any = None
    extra: dict = field(default_factory=dict)


def score_run(suite: Suite, run: VariantRun) -> dict[str, MetricScores]:
    """Every metric of the suite for one variant's answers (metric modules from eval/metrics/)."""
    import numpy as np

    from assistant.metrics import load_metric
    from assistant.stats import bootstrap_ci, mean_of

    answers = [r.answer for r in run.records]
    references = [c.reference for c in suite.cases]
    out: dict[str, MetricScores] = {}
    for name in suite.metrics:
        module = load_metric(name)
        if name == "perplexity":
            nll = np.array([r.nll for r in run.records])
            tokens = np.array([r.ref_tokens for r in run.records])
            result = module.compute(nll=nll.tolist(), tokens=tokens.tolist())
            statistic = lambda idx, nll=nll, tokens=tokens: float(math.exp(nll[idx].sum() / tokens[idx].sum()))
        elif name in LABEL_METRICS:
            predicted = [extract_label(a, suite.labels) for a in answers]
            gold = [c.label for c in suite.cases]
            if name == "macro_f1":
                result = module.compute(predictions=predicted, references=gold, labels=suite.labels)
                statistic = _macro_f1_statistic(predicted, gold, suite.labels)
            else:
                result = module.compute(predictions=predicted, references=gold)
                statistic = mean_of(result["scores"])
        elif name in FACT_METRICS:
            result = module.compute(**_fact_inputs(name, answers, references, run, suite))
            part, whole = (np.array(result[k], dtype=float) for k in FACT_METRICS[name])
            statistic = lambda idx, part=part, whole=whole: float(part[idx].sum() / max(whole[idx].sum(), 1))
        else:
            result = module.compute(predictions=answers, references=references)
            statistic = mean_of(result["scores"])
        scores = MetricScores(name, [float(s) for s in result["scores"]], statistic,
                              extra={k: v for k, v in result.items() if k not in ("scores",)})
        scores.estimate = bootstrap_ci(statistic, len(suite.cases), suite.bootstrap_rounds)
        if name in FACT_ERRORS:  # wrong facts per answer, with an interval of their own
            errors = result[FACT_ERRORS[name]]
            scores.extra["errors_per_answer"] = bootstrap_ci(mean_of(errors), len(errors), suite.bootstrap_rounds)
        out[name] = scores
    return out


FACT_METRICS = {"key_facts": ("stated", "facts"), "grounding": ("supported", "claimed"),
                "context_recall": ("in_context", "facts"), "citations": ("correct", "facts")}
"""Fact metrics, aggregated as a ratio of sums over the cases (cases without facts weigh nothing), with the
per-case counts their module returns for it. Their per-case counts of errors get intervals of their own."""
def _fact_inputs(name: str, answers: list[str], references: list[str], run: VariantRun, suite: Suite) -> dict:
    """What a fact metric compares: the answers with the references (key_facts), the prompts (grounding) or the
    passages shown (citations); context_recall compares the passages shown with the references."""
    if name == "context_recall":
        return {"predictions": shown_texts(run, suite), "references": references}
    sources = {"key_facts": lambda: references, "citations": lambda: shown_passages(run, suite)}.get(
        name, lambda: prompt_texts(run, suite))()
    return {"predictions": answers, "references": sources}


FACT_ERRORS = {"key_facts": "contradicted", "grounding": "unsupported"}


def prompt_texts(run: VariantRun, suite: Suite) -> list[str]:
    """What the variant showed the model for each case (its rendered prompt, passages included): the sources
    grounding checks an answer's facts against. Rendering needs the tokenizer and the retriever, no model."""
    from assistant.generate import Bot

    bot = Bot(run.variant)
    return [bot.prepare(case.messages).text for case in suite.cases]


def shown_texts(run: VariantRun, suite: Suite) -> list[str]:
    """The passages each answer was shown, joined: kept with the answer, or (answers cached before that was
    kept) found again the way the variant finds them, which needs the retriever and no model."""
    if all(r.passage_texts is not None for r in run.records):
        return ["\n\n".join(r.passage_texts) for r in run.records]
    from assistant.context import retrieval_query
    from assistant.generate import Bot

    bot = Bot(run.variant)
    found = [bot.retriever.find(retrieval_query(c.messages)).passages if bot.retriever else [] for c in suite.cases]
    for record, passages in zip(run.records, found):
        if record.passage_texts is None:
            record.passage_texts = [p.text for p in passages]
    return ["\n\n".join(r.passage_texts) for r in run.records]


def shown_passages(run: VariantRun, suite: Suite) -> list[list[str]]:
    """The passages each answer was shown, one text each in the order shown (passage [1] first), found as
    ``shown_texts`` finds them: the citation metric needs to tell them apart."""
    shown_texts(run, suite)  # fills in the records' passage_texts where an older cache lacks them
    return [list(r.passage_texts) for r in run.records]


def _macro_f1_statistic(predicted: list[str], gold: list[str], labels: list[str]) -> Callable:
    import numpy as np

    index = {label: i for i, label in enumerate(labels)}
    p = np.array([index.get(x, -1) for x in predicted])
    g = np.array([index.get(x, -2) for x in gold])

    def statistic(idx) -> float:
        pi, gi = p[idx], g[idx]
        f1 = []
        for k in range(len(labels)):
            tp = np.sum((pi == k) & (gi == k))
            fp = np.sum((pi == k) & (gi != k))
            fn = np.sum((pi != k) & (gi == k))
            f1.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
        return float(np.mean(f1))

    return statistic


def rank_variants(suite: Suite, runs: dict[str, VariantRun], scores: dict[str, dict[str, MetricScores]]) -> list[str]:
    """Best first: by the primary metric; exact ties (at 4 decimals) by the secondary, then by speed."""
    from assistant.metrics import HIGHER_IS_BETTER

    def key(name: str) -> tuple:
        parts = []
        for metric in (suite.primary, suite.secondary):
            if metric:
                value = round(scores[name][metric].estimate.value, 4)
                parts.append(-value if HIGHER_IS_BETTER[metric] else value)
        speed = runs[name].cost.get("tokens_per_second") or 0.0
        parts.append(-(speed if math.isfinite(speed) else 0.0))
        return tuple(parts)

    return sorted(runs, key=key)
