"""Abstention: whether an answer declines to answer exactly when its reference does (the reference of an
unanswerable case is the bot's abstention text)."""

import datasets
import evaluate

from assistant.facts import abstains

_DESCRIPTION = """
Abstention. An answer abstains when it declines for want of information ("I can't find that in our help
articles", "I don't have information about that", "the passages don't mention it"); the rules are in
assistant/facts.py. A case should be abstained on when its reference answer abstains: the cases whose
answer is in no document carry the bot's abstention text as their reference.

Per example: 1 when the answer's decision matches the reference's (abstained on an unanswerable case, or
answered an answerable one), else 0. Aggregates: the share of right decisions; the abstention rate on the
cases that call for it; and the false-abstention rate on the others. Higher is better for the first two,
lower for the third.
"""

_INPUTS = """
Args:
    predictions: list of str, the generated answers.
    references: list of str, the reference answers.

Returns:
    abstention: float, the share of cases decided right (abstained when the reference does, answered otherwise).
    scores: list of float, 1.0 or 0.0 per example.
    abstained: list of int, 1 when the answer abstains.
    expected: list of int, 1 when the reference abstains.
    abstention_rate: float, abstentions among the cases whose reference abstains (nan when there are none).
    false_abstention_rate: float, abstentions among the other cases (nan when there are none).
"""


class Abstention(evaluate.Metric):
    """Right decisions to abstain or answer, with the abstention and false-abstention rates."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        if not predictions:
            raise ValueError("abstention: no examples")
        abstained = [int(abstains(p)) for p in predictions]
        expected = [int(abstains(r)) for r in references]
        should = [a for a, e in zip(abstained, expected) if e]
        should_not = [a for a, e in zip(abstained, expected) if not e]
        return {
            "abstention": sum(a == e for a, e in zip(abstained, expected)) / len(predictions),
            "scores": [float(a == e) for a, e in zip(abstained, expected)],
            "abstained": abstained,
            "expected": expected,
            "abstention_rate": sum(should) / len(should) if should else float("nan"),
            "false_abstention_rate": sum(should_not) / len(should_not) if should_not else float("nan"),
        }
