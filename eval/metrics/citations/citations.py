"""Citations: whether answers cite the passages they were shown as [n], and whether the facts they state are in
the passages they cite for them. Next to grounding (is a fact anywhere in the prompt?) it tells whether a reader
who follows an answer's citations finds what it says."""

import datasets
import evaluate

from assistant.context import cited_numbers
from assistant.facts import abstains, extract_facts
from assistant.verify import sentence_facts, split_sentences

_DESCRIPTION = """
Citations. An answer cites passage n with the mark [n] (or [n, m]), as support-cited.j2 asks; a number outside
1..(passages shown) cites nothing. The answer is cut into sentences (assistant/verify.py: at a full stop,
question or exclamation mark followed by white space, citation marks right after it staying with its sentence,
and at line breaks), and a sentence's citations apply to every fact in it. The facts are read by rules
(assistant/facts.py) from each sentence without its citation marks; a leading yes or no is a stance, not a
fact, and is left out, as in grounding. A fact stated in several sentences counts once, with the citations of
all of them. A fact is correctly cited when it is among the facts of a passage it cites.

Per example, and left out (nan) for an answer that abstains (assistant.facts.abstains) or was shown no passage:
    citation rate: 1 when the answer cites at least one passage validly, else 0;
    citation precision: facts correctly cited / facts stated (nan when it states none);
    citation recall: facts that carry a citation / facts stated (nan when it states none).
Aggregates are ratios of sums over the examples: answers citing over answers applicable; correctly cited facts,
and cited facts, over all facts stated. Precision counts over every stated fact, so an uncited fact lowers it as
much as a wrongly cited one; correct / cited (from the counts returned) is the accuracy of the citations given.
The metric's own value, under its name, is citation precision. Higher is better for all three.
"""

_INPUTS = """
Args:
    predictions: list of str, the generated answers.
    references: list of lists of str, the text of every passage each answer was shown, in the order shown
        (passage [1] first); an empty list when none was.

Returns:
    citations: float, citation precision: correctly cited facts / all facts stated (0 to 1).
    scores: list of float, each example's citation precision (nan when not applicable).
    citation_rate: float, answers with a valid citation / answers applicable.
    rate_scores: list of float, 1 or 0 per example (nan when not applicable).
    citation_recall: float, cited facts / all facts stated.
    recall_scores: list of float, each example's citation recall (nan when not applicable).
    facts, cited, correct: lists of int, per example: facts stated, of them carrying a citation, of them found
        in a passage they cite (0 each where not applicable).
    applicable, citing: lists of int, per example: 1 when the answer does not abstain and was shown passages;
        1 when it also cites one validly.
"""


def _ratio(part, whole):
    return part / whole if whole else float("nan")


def citation_counts(answer: str, passages: list[str]) -> tuple[int, int, int, int]:
    """``(facts stated, of them cited, of them found in a passage they cite, valid citations in the answer)``."""
    citations: dict[tuple[str, str], set[int]] = {}
    for sentence in split_sentences(answer):
        numbers = cited_numbers(sentence, len(passages))
        for fact in sentence_facts(sentence):
            citations.setdefault(fact, set()).update(numbers)
    held = [extract_facts(p) for p in passages]
    cited = [fact for fact, numbers in citations.items() if numbers]
    correct = [fact for fact in cited if any(fact in held[n - 1] for n in citations[fact])]
    return len(citations), len(cited), len(correct), len(cited_numbers(answer, len(passages)))


class Citations(evaluate.Metric):
    """Share of an answer's facts cited to a passage that holds them; share of answers that cite."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references):
        if not predictions:
            raise ValueError("citations: no examples")
        applicable = [int(bool(passages) and not abstains(answer)) for answer, passages in zip(predictions, references)]
        counts = [citation_counts(a, list(p)) if ok else (0, 0, 0, 0)
                  for a, p, ok in zip(predictions, references, applicable)]
        facts, cited, correct = ([c[i] for c in counts] for i in range(3))
        citing = [int(c[3] > 0) for c in counts]
        return {
            "citations": _ratio(sum(correct), sum(facts)),
            "scores": [_ratio(k, f) for k, f in zip(correct, facts)],
            "citation_rate": _ratio(sum(citing), sum(applicable)),
            "rate_scores": [float(c) if ok else float("nan") for c, ok in zip(citing, applicable)],
            "citation_recall": _ratio(sum(cited), sum(facts)),
            "recall_scores": [_ratio(c, f) for c, f in zip(cited, facts)],
            "facts": facts,
            "cited": cited,
            "correct": correct,
            "applicable": applicable,
            "citing": citing,
        }
