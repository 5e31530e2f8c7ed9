"""The counterfactual probe: does a variant answer differently when only a person's name, gender or
nationality changes?

Each case whose user messages contain a word from the swap list (``counterfactual.yaml`` beside this module,
or the user's own) gets a copy with those words swapped both ways (he <-> she, John <-> Maria, ...). Every
variant answers the copies the way it answers the suite (batched, cached). A case *changes* when, for a
classifier, the label the answer names differs between the original and the copy, or, for generation, the
answer's checkable facts differ (``assistant.facts``; names that were swapped are swapped back first).
The rate of changed cases gets a 95% bootstrap interval; the report lists the cases that changed.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.evaluation.answers import AnswerCache, VariantRun, answer_cases
from assistant.evaluation.suite import Case, Suite
from assistant.settings_reader import ConfigError, read_settings_file

DEFAULT_LIST = Path(__file__).parent / "counterfactual.yaml"


def load_swaps(path: Path = DEFAULT_LIST) -> dict[str, str]:
    """The swap list as a lower-case word -> word map, both directions (the first pair naming a word wins)."""
    data = read_settings_file(Path(path), "counterfactual list")
    swaps: dict[str, str] = {}
    for group, pairs in data.items():
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise ConfigError(f"{path}: {group!r} must be a list of [word, word] pairs")
        for a, b in pairs:
            swaps.setdefault(str(a).lower(), str(b).lower())
            swaps.setdefault(str(b).lower(), str(a).lower())
    return swaps


def swap_words(text: str, swaps: dict[str, str]) -> str:
    """``text`` with every listed word swapped, as whole words, keeping the case of each word's first letter
    (and all capitals)."""
    if not swaps:
        return text
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, swaps), key=len, reverse=True)) + r")\b", re.I)

    def replace(match: re.Match) -> str:
        word, other = match.group(0), swaps[match.group(0).lower()]
        if word.isupper() and len(word) > 1:
            return other.upper()
        return other.capitalize() if word[0].isupper() else other

    return pattern.sub(replace, text)


def counterfactual_cases(cases: list[Case], swaps: dict[str, str]) -> list[tuple[int, Case]]:
    """(index of the original, swapped copy) for each case whose user messages contain a listed word."""
    out = []
    for i, case in enumerate(cases):
        messages = [{**m, "content": swap_words(m["content"], swaps)} if m["role"] == "user" else m
                    for m in case.messages]
        if messages != case.messages:
            out.append((i, dataclasses.replace(case, id=f"{case.id}~swapped", messages=messages)))
    return out


@dataclass
class ProbeResult:
    """One variant under the probe."""

    rate: Any
    """Estimate of the share of probed cases whose answer changed (value, 95% interval)."""
    changed: list[dict[str, str]]
    """Each changed case: id, question, swapped question, both answers (or labels)."""
    probed: int


def run_probe(suite: Suite, runs: dict[str, VariantRun], cache: AnswerCache | None, swaps: dict[str, str],
              engine: str | None = None, progress=lambda n: None) -> dict[str, ProbeResult]:
    """Every variant of ``runs`` answers the swapped copies; returns how often its answers changed."""
    from assistant.evaluation.scoring import extract_label
    from assistant.facts import extract_facts
    from assistant.stats import bootstrap_ci, mean_of

    pairs = counterfactual_cases(suite.cases, swaps)
    if not pairs:
        return {}
    copies = dataclasses.replace(suite, cases=[copy for _, copy in pairs], metrics=[])
    labels = bool(suite.labels) and all(c.label for c in suite.cases)

    def meaning(answer: str, swapped: bool) -> Any:  # what must not change: the label, or the facts
        if labels:
            return extract_label(answer, suite.labels)
        return {(kind, swaps.get(value, value)) if kind == "name" and swapped else (kind, value)
                for kind, value in extract_facts(answer)}  # a name the swap put in counts as the original

    results = {}
    for sv in suite.variants:
        if sv.name not in runs:
            continue
        swapped = answer_cases(copies, sv, cache, progress, engine=engine, record_cost=False)
        changed, flags = [], []
        for (i, copy), answer in zip(pairs, swapped.records):
            original = runs[sv.name].records[i].answer
            differs = meaning(original, False) != meaning(answer.answer, True)
            flags.append(float(differs))
            if differs:
                changed.append({"case": suite.cases[i].id, "question": suite.cases[i].messages[-1]["content"],
                                "swapped": copy.messages[-1]["content"], "answer": original,
                                "swapped_answer": answer.answer})
        results[sv.name] = ProbeResult(bootstrap_ci(mean_of(flags), len(flags), suite.bootstrap_rounds),
                                       changed, len(flags))
    return results


def probe_markdown(results: dict[str, ProbeResult], order: list[str], shown: int = 3) -> list[str]:
    """The report's section on the probe: the change rate of each variant, then a few changed cases."""
    if not results:
        return []
    lines = ["## Counterfactual probe", "",
             "Copies of the cases with names, gendered words and nationalities swapped (he <-> she, John <-> "
             "Maria, ...); a case changes when the answer's label (classifiers) or its checkable facts "
             "(generation) differ from the original's. Interval: 95% bootstrap over the probed cases.", "",
             "| Variant | probed cases | changed | change rate [95% CI] |", "|---|---:|---:|---|"]
    for name in [n for n in order if n in results]:
        r = results[name]
        lines.append(f"| {name} | {r.probed} | {len(r.changed)} | "
                     f"{r.rate.value:.2f} [{r.rate.low:.2f}, {r.rate.high:.2f}] |")
    lines.append("")
    for name in [n for n in order if n in results]:
        for change in results[name].changed[:shown]:
            lines.append(f"- **{name}** on {change['case']}: {change['question']!r} -> {change['answer']!r}; "
                         f"swapped {change['swapped']!r} -> {change['swapped_answer']!r}")
    return lines + [""]
