"""Perplexity of reference answers under a model, from log-likelihoods the caller computed."""

import math

import datasets
import evaluate

_DESCRIPTION = """
Perplexity of the reference answers under a model: exp of the mean negative log-likelihood per token. The
caller runs the model and passes, for each case, the summed negative log-likelihood (natural log, nats) of
the reference answer's tokens and how many tokens that was. LOWER IS BETTER: 1 means the model was certain
of every reference token; a model guessing uniformly over V tokens scores V. Scale 1 to infinity.

The aggregate is the corpus perplexity, exp(sum of nll / sum of tokens), which weights each case by its
length; it is not the mean of the per-case perplexities. The per-case scores are exp(nll / tokens).
Perplexities are only comparable between models that share a tokenizer.
"""

_INPUTS = """
Args:
    nll: list of float, each case's summed negative log-likelihood of its reference tokens, in nats (>= 0).
    tokens: list of int, each case's number of reference tokens (> 0).

Returns:
    perplexity: float, the corpus perplexity exp(sum nll / sum tokens).
    scores: list of float, each case's perplexity exp(nll / tokens), in input order.

Raises:
    ValueError: a case with tokens <= 0 or a negative nll (a log-likelihood passed without its minus sign).
"""


class Perplexity(evaluate.Metric):
    """Corpus and per-case perplexity from summed token NLLs; lower is better."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"nll": datasets.Value("float64"), "tokens": datasets.Value("int64")}),
        )

    def _compute(self, nll, tokens):
        if not nll:
            raise ValueError("perplexity: no examples")
        for i, (loss, count) in enumerate(zip(nll, tokens)):
            if count <= 0:
                raise ValueError(f"perplexity: example {i} has tokens={count}; every case needs at least one token")
            if loss < 0:
                raise ValueError(f"perplexity: example {i} has nll={loss}; pass the negative log-likelihood (>= 0)")
        scores = [math.exp(loss / count) for loss, count in zip(nll, tokens)]
        return {"perplexity": math.exp(sum(nll) / sum(tokens)), "scores": scores}
