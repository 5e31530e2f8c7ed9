"""Key facts: how many of the reference answer's checkable facts an answer states, and how many it contradicts."""

import datasets
import evaluate

from assistant.facts import abstains, compare_facts

_DESCRIPTION = """
Key facts. The checkable facts of each reference answer are read by rules (assistant/facts.py): amounts of
money, percentages, durations with their unit, dates, other numbers with their unit, codes such as E3,
proper and product names, and a leading yes or no. An answer states a fact when the same kind of fact with
the same normalised value is in it ("thirty days" states "30 days"); it contradicts one when it states that
kind of fact only with another value ("14 days" against "30 days", "$49.98" against "$49.99", "No" against
"Yes"; another name is never counted as a contradiction).

Per example: the share of the reference's facts stated (recall, 0 to 1; not a number when the reference
has none, and then left out of the aggregate), and the count of contradicted facts. A reference that
abstains (an unanswerable case, whose reference is the bot's "I can't find that" text) counts as having no
facts: those cases are scored by the abstention metric instead. Aggregates: recall over
all reference facts together, and contradicted facts per answer. Higher recall is better; fewer
contradictions are better.
"""

_INPUTS = """
Args:
    predictions: list of str, the generated answers.
    references: list of str, one reference answer per prediction.

Returns:
    key_facts: float, stated reference facts / all reference facts (0 to 1).
    scores: list of float, each example's recall (nan when its reference has no checkable fact).
    contradicted: list of int, contradicted reference facts per example.
    contradicted_per_answer: float, the mean of contradicted.
    facts, stated: lists of int, reference facts and stated ones per example.
"""


class KeyFacts(evaluate.Metric):
    """Recall of the reference's checkable facts, and contradictions of them."""

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
            raise ValueError("key_facts: no examples")
        # A reference that abstains (the case's answer is in no document) holds no fact about the question: its
        # hand-off details would reward repeating them. Such cases are left to the abstention metric.
        counts = [(0, 0, 0) if abstains(r) else compare_facts(p, r) for p, r in zip(predictions, references)]
        facts = [c[0] for c in counts]
        stated = [c[1] for c in counts]
        contradicted = [c[2] for c in counts]
        return {
            "key_facts": sum(stated) / sum(facts) if sum(facts) else float("nan"),
            "scores": [s / f if f else float("nan") for f, s in zip(facts, stated)],
            "contradicted": contradicted,
            "contradicted_per_answer": sum(contradicted) / len(contradicted),
            "facts": facts,
            "stated": stated,
        }
