"""ROUGE-L F-measure of each answer against its reference, via Google's ``rouge_score`` package."""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = """
ROUGE-L: the longest common subsequence (LCS) of prediction and reference tokens, as an F-measure of
LCS precision (LCS / prediction length) and LCS recall (LCS / reference length). Words need not be
adjacent, only in the same order, so it rewards an answer that keeps the reference's sequence of facts.

Tokens are lowercase runs of a-z and 0-9 (anything else, including non-Latin letters, is dropped), reduced
by the Porter stemmer so that "returns", "returned" and "returning" match. Scale 0 to 1, higher is better.
The aggregate is the mean of the per-example scores.
"""

_CITATION = """
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    publisher = "Association for Computational Linguistics",
    pages = "74--81",
}
"""

_INPUTS = """
Args:
    predictions: list of str, the generated answers.
    references: list of str, one reference answer per prediction.

Returns:
    rouge_l: float, the mean ROUGE-L F-measure (0 to 1).
    scores: list of float, the ROUGE-L F-measure of each example, in input order.
"""


class RougeL(evaluate.Metric):
    """ROUGE-L F-measure with Porter stemming; the aggregate is the mean over examples."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references):
        if not predictions:
            raise ValueError("rouge_l: no examples")
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        # RougeScorer.score takes (target, prediction): the reference comes first.
        scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
        return {"rouge_l": sum(scores) / len(scores), "scores": scores}
