"""Exact match of answers and references after SQuAD-style normalization."""

import re
import unicodedata

import datasets
import evaluate

_DESCRIPTION = """
Exact match: 1 when the prediction equals the reference after both are normalized, else 0. Normalization,
in this order: lowercase; delete punctuation (any Unicode punctuation, so curly quotes and dashes too; deleted,
not replaced, so "don't" becomes "dont"); drop the articles "a", "an" and "the"; collapse runs of whitespace
and trim. Scale 0 to 1, higher is better. The aggregate is the mean, the share of exact matches.
"""

_CITATION = """
@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of the 2016 Conference on Empirical Methods in Natural Language Processing",
    year = "2016",
    publisher = "Association for Computational Linguistics",
    pages = "2383--2392",
}
"""

_INPUTS = """
Args:
    predictions: list of str, the generated answers.
    references: list of str, one reference answer per prediction.

Returns:
    exact_match: float, the share of examples that match (0 to 1).
    scores: list of float, 1.0 or 0.0 for each example, in input order.
"""

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, delete punctuation, drop articles, collapse whitespace (see the module description)."""
    text = text.lower()
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


class ExactMatch(evaluate.Metric):
    """Share of predictions equal to their reference after normalization."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        if not predictions:
            raise ValueError("exact_match: no examples")
        scores = [float(normalize_answer(p) == normalize_answer(r)) for p, r in zip(predictions, references)]
        return {"exact_match": sum(scores) / len(scores), "scores": scores}
