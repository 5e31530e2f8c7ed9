"""chrF (character n-gram F-score) of answers against references, via ``sacrebleu``."""

import datasets
import evaluate
from sacrebleu.metrics import CHRF

_DESCRIPTION = """
chrF: the F-score of character n-grams (orders 1 to 6, whitespace ignored) shared by prediction and
reference, with recall weighted twice as much as precision (beta = 2). Precision and recall are averaged
over the n-gram orders that both texts have, then combined. Partial word matches count, so it is kinder than
BLEU to inflections and typos, and it works for any script. Scale 0 to 100, higher is better.

The per-example scores are sacrebleu's sentence chrF; the aggregate is sacrebleu's corpus chrF, which pools
n-gram counts over all examples (so it is not the mean of the per-example scores).
"""

_CITATION = """
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation",
    author = "Popovi{\\'c}, Maja",
    booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation",
    year = "2015",
    publisher = "Association for Computational Linguistics",
    pages = "392--395",
}
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    publisher = "Association for Computational Linguistics",
    pages = "186--191",
}
"""

_INPUTS = """
Args:
    predictions: list of str, the generated answers.
    references: list of str, one reference answer per prediction.

Returns:
    chrf: float, corpus chrF over all examples (0 to 100).
    scores: list of float, sentence chrF of each example, in input order.
"""


class Chrf(evaluate.Metric):
    """sacrebleu chrF with its defaults (character order 6, no word n-grams, beta 2)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references):
        if not predictions:
            raise ValueError("chrf: no examples")
        chrf = CHRF()
        scores = [chrf.sentence_score(pred, [ref]).score for pred, ref in zip(predictions, references)]
        corpus = chrf.corpus_score(list(predictions), [list(references)]).score
        return {"chrf": corpus, "scores": scores}
