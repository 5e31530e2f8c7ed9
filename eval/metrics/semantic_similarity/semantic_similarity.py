"""Cosine similarity of answer and reference sentence embeddings (all-MiniLM-L6-v2, offline)."""

import datasets
import evaluate

from assistant.retrieval import sentence_encoder

_DESCRIPTION = """
Semantic similarity: the cosine similarity of the sentence embeddings of prediction and reference, from
the all-MiniLM-L6-v2 model that dense retrieval uses (mean pooling, texts truncated to 256 tokens). It
credits an answer that says the same thing in other words, which n-gram metrics do not. Scale -1 to 1
(in practice about 0 for unrelated texts and 1 for the same meaning), higher is better. The aggregate is the
mean of the per-example scores. An empty string is embedded as it is.
"""

_CITATION = """
@inproceedings{reimers-gurevych-2019-sentence,
    title = "Sentence-{BERT}: Sentence Embeddings using {S}iamese {BERT}-Networks",
    author = "Reimers, Nils and Gurevych, Iryna",
    booktitle = "Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing",
    year = "2019",
    publisher = "Association for Computational Linguistics",
    pages = "3982--3992",
}
"""

_INPUTS = """
Args:
    predictions: list of str, the generated answers.
    references: list of str, one reference answer per prediction.

Returns:
    semantic_similarity: float, the mean cosine similarity (-1 to 1).
    scores: list of float, the cosine similarity of each example, in input order.
"""


class SemanticSimilarity(evaluate.Metric):
    """Mean cosine similarity of all-MiniLM-L6-v2 embeddings, shared with dense retrieval."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2"],
        )

    def _compute(self, predictions, references):
        if not predictions:
            raise ValueError("semantic_similarity: no examples")
        vectors = sentence_encoder().embed(list(predictions) + list(references))
        n = len(predictions)
        # Rows are unit length, so the row-wise dot product is the cosine similarity.
        scores = (vectors[:n] * vectors[n:]).sum(-1).tolist()
        return {"semantic_similarity": sum(scores) / len(scores), "scores": scores}
