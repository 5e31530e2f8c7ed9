"""BLEU of answers against references, via ``sacrebleu``."""

import datasets
import evaluate
from sacrebleu.metrics import BLEU

_DESCRIPTION = """
BLEU: the geometric mean of modified word n-gram precisions (orders 1 to 4) times a brevity penalty for
predictions shorter than their reference. Text is tokenized with sacrebleu's default "13a" tokenizer and is
case-sensitive. Scale 0 to 100, higher is better.

Per-example scores are sentence BLEU with effective order (n-gram orders the sentence is too short to have
are left out, so a short exact answer scores 100) and sacrebleu's default "exp" smoothing. The aggregate is
standard corpus BLEU, which pools n-gram counts over all examples and does not use effective order, so a
corpus whose answers all have fewer than 4 words scores 0 however good they are.
"""

_CITATION = """
@inproceedings{papineni-etal-2002-bleu,
    title = "{B}leu: a Method for Automatic Evaluation of Machine Translation",
    author = "Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing",
    booktitle = "Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics",
    year = "2002",
    publisher = "Association for Computational Linguistics",
    pages = "311--318",
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
    bleu: float, corpus BLEU over all examples (0 to 100).
    scores: list of float, sentence BLEU of each example, in input order.
"""


class Bleu(evaluate.Metric):
    """sacrebleu BLEU: sentence BLEU with effective order per example, corpus BLEU as the aggregate."""

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
            raise ValueError("bleu: no examples")
        sentence = BLEU(effective_order=True)
        scores = [sentence.sentence_score(pred, [ref]).score for pred, ref in zip(predictions, references)]
        corpus = BLEU().corpus_score(list(predictions), [list(references)]).score
        return {"bleu": corpus, "scores": scores}
