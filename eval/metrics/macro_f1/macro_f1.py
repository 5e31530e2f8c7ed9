"""Macro-averaged F1 of predicted labels against reference labels, via scikit-learn."""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = """
Macro-F1: the F1 score of each label (harmonic mean of its precision and recall), averaged over labels with
equal weight, so a rare label counts as much as a common one. Labels are strings, compared after stripping
surrounding whitespace and lowercasing. The label set is the sorted set of reference labels unless `labels`
is given. A prediction outside the label set is wrong: it lowers the recall of the reference label and is
no label's true positive. A label with no predictions and no references scores 0. Scale 0 to 1, higher is
better.

Macro-F1 is not a mean over examples, so the per-example "scores" are correctness (1.0 when the prediction
equals the reference, else 0.0), the same as accuracy's: they are what a paired test or a bootstrap over
examples resamples, and the F1 itself should be recomputed on each resample.
"""

_INPUTS = """
Args:
    predictions: list of str, the predicted labels.
    references: list of str, one reference label per prediction.
    labels: optional list of str, the labels to average over (default: the sorted set of references).

Returns:
    macro_f1: float, the unweighted mean of the per-label F1 scores (0 to 1).
    per_label: dict of str to float, each label's F1 (labels lowercased and stripped).
    scores: list of float, 1.0 (correct) or 0.0 for each example, in input order.
"""


def _normalize(label: str) -> str:
    return label.strip().lower()


class MacroF1(evaluate.Metric):
    """scikit-learn macro-F1 over a fixed label set, with per-label F1 and per-example correctness."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, labels=None):
        if not predictions:
            raise ValueError("macro_f1: no examples")
        predictions = [_normalize(p) for p in predictions]
        references = [_normalize(r) for r in references]
        if labels is None:
            labels = sorted(set(references))
        else:
            labels = list(dict.fromkeys(_normalize(label) for label in labels))
        per_label = f1_score(references, predictions, labels=labels, average=None, zero_division=0)
        scores = [float(p == r) for p, r in zip(predictions, references)]
        return {
            "macro_f1": float(per_label.mean()),
            "per_label": {label: float(f1) for label, f1 in zip(labels, per_label)},
            "scores": scores,
        }
