"""Context recall: the share of the reference answer's checkable facts that are in the passages the model was
shown. Next to key-fact recall (what the answer states) it tells where a missing fact was lost: before the
model (retrieval never showed it) or in generation (shown, not said)."""

import datasets
import evaluate

from assistant.facts import abstains, compare_facts

_DESCRIPTION = """
Context recall. The checkable facts of each reference answer are read by rules (assistant/facts.py), as for
key-fact recall; a fact is in the context when the same kind of fact with the same normalised value is in
the passages the model was shown (their text joined). No judge model is needed, so it runs offline and gives
the same number every time.

Per example: the share of the reference's facts that the passages hold (0 to 1; not a number when the
reference has none, and then left out of the aggregate). A reference that abstains (an unanswerable case)
counts as having no facts, as in key_facts. Aggregate: facts in the context over all reference facts.
Higher is better.
"""

_INPUTS = """
Args:
    predictions: list of str, the passages each answer was shown, joined into one text.
    references: list of str, one reference answer per example.

Returns:
    context_recall: float, reference facts in the context / all reference facts (0 to 1).
    scores: list of float, each example's share (nan when its reference has no checkable fact).
    facts, in_context: lists of int, reference facts and those the context holds, per example.
"""


class ContextRecall(evaluate.Metric):
    """Share of the reference's facts present in the passages shown."""

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
            raise ValueError("context_recall: no examples")
        counts = [(0, 0, 0) if abstains(r) else compare_facts(p, r) for p, r in zip(predictions, references)]
        facts = [c[0] for c in counts]
        held = [c[1] for c in counts]
        return {
            "context_recall": sum(held) / sum(facts) if sum(facts) else float("nan"),
            "scores": [h / f if f else float("nan") for f, h in zip(facts, held)],
            "facts": facts,
            "in_context": held,
        }
