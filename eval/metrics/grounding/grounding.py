"""Grounding: the share of an answer's checkable facts that its sources (the prompt it was shown, with any
retrieved passages) support, and the number of unsupported facts per answer."""

import datasets
import evaluate

from assistant.facts import supported_facts

_DESCRIPTION = """
Grounding. The checkable facts of each answer are read by rules (assistant/facts.py): amounts of money,
percentages, durations with their unit, dates, other numbers with their unit, codes, proper and product
names (a leading yes or no is a stance, not a fact, and is left out). A fact is supported when the same kind
of fact with the same normalised value is in the sources: the whole prompt the model saw, so retrieved
passages, the persona's own facts and the conversation all count. An answer that invents an amount, a
deadline or a product name has unsupported facts.

Per example: the share of the answer's facts that are supported (0 to 1; not a number when the answer
states none, and then left out of the aggregate), and the count of unsupported facts. Aggregates: supported
facts over all facts stated, and unsupported facts per answer. Higher is better for the share; fewer
unsupported facts are better.
"""

_INPUTS = """
Args:
    predictions: list of str, the generated answers.
    references: list of str, the sources of each answer (the prompt text it was generated from).

Returns:
    grounding: float, supported facts / all facts the answers state (0 to 1).
    scores: list of float, each example's supported share (nan when the answer states no fact).
    unsupported: list of int, unsupported facts per example.
    unsupported_per_answer: float, the mean of unsupported.
"""


class Grounding(evaluate.Metric):
    """Share of an answer's facts found in its sources."""

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
            raise ValueError("grounding: no examples")
        counts = [supported_facts(p, s) for p, s in zip(predictions, references)]
        claimed = [c[0] for c in counts]
        supported = [c[1] for c in counts]
        unsupported = [c - s for c, s in counts]
        return {
            "grounding": sum(supported) / sum(claimed) if sum(claimed) else float("nan"),
            "scores": [s / c if c else float("nan") for c, s in counts],
            "unsupported": unsupported,
            "unsupported_per_answer": sum(unsupported) / len(unsupported),
            "claimed": claimed,
            "supported": supported,
        }
