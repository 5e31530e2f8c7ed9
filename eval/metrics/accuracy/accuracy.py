"""Accuracy of predicted labels (intent, category, yes/no) against reference labels."""

import datasets
import evaluate

_DESCRIPTION = """
Accuracy: the share of predicted labels equal to their reference label. Labels are strings, compared after
stripping surrounding whitespace and lowercasing, so "Billing " matches "billing". Scale 0 to 1, higher is
better. The aggregate is the mean of the per-example scores.
"""

_INPUTS = """
Args:
    predictions: list of str, the predicted labels.
    references: list of str, one reference label per prediction.

Returns:
    accuracy: float, the share of correct labels (0 to 1).
    scores: list of float, 1.0 (correct) or 0.0 for each example, in input order.
"""


class Accuracy(evaluate.Metric):
    """Share of predicted labels equal to the reference, case- and surrounding-space-insensitive."""

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
            raise ValueError("accuracy: no examples")
        scores = [float(p.strip().lower() == r.strip().lower()) for p, r in zip(predictions, references)]
        return {"accuracy": sum(scores) / len(scores), "scores": scores}
