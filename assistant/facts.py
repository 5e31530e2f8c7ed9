"""Checkable facts in a text: amounts of money, percentages, durations, dates, other numbers with their units,
codes and proper names, and a leading yes or no. The fact metrics (eval/metrics/key_facts, grounding) compare
them between an answer and its reference or its sources.

Each fact is ``(kind, value)`` with the value normalised, so "$49.99" and "49.99 dollars" are the same fact,
"thirty days" and "30 days" too, and "14 days" is a *different value of the same kind* as "30 days": that is
what counts as a contradiction. Extraction is rules, not a model: deterministic, offline, and fast.
"""

from __future__ import annotations

import re

WORD_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "fourteen": 14, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
    "forty-five": 45, "sixty": 60, "ninety": 90, "hundred": 100, "a": 1, "an": 1,
}
DURATION_UNITS = {"second": "second", "minute": "minute", "hour": "hour", "day": "day", "business day": "business day",
                  "working day": "business day", "week": "week", "month": "month", "year": "year"}
QUANTITY_UNITS = {"kg": "kg", "g": "g", "grams": "g", "gram": "g", "ml": "ml", "l": "l", "litre": "l", "liter": "l",
                  "litres": "l", "liters": "l", "cm": "cm", "mm": "mm", "bar": "bar", "w": "W", "watts": "W",
                  "watt": "W", "v": "V", "volts": "V", "°c": "°C", "°f": "°F", "cups": "cup", "cup": "cup",
                  "shots": "shot", "shot": "shot", "items": "item", "item": "item", "times": "time"}
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")

_NUMBER = r"\d+(?:[.,]\d+)*"
_WORDS = "|".join(sorted((re.escape(w) for w in WORD_NUMBERS if len(w) > 2), key=len, reverse=True))
_MONEY = re.compile(rf"(?:[$€£]\s?({_NUMBER}))|(?:\b({_NUMBER})\s?(?:dollars|usd|eur|euros?|gbp|pounds)\b)", re.I)
_PERCENT = re.compile(rf"\b({_NUMBER})\s?(?:%|percent\b|per cent\b)", re.I)
_DURATION = re.compile(
    rf"\b({_NUMBER}|{_WORDS}|an?)[\s-]+(business days?|working days?|seconds?|minutes?|hours?|days?|weeks?|months?|years?)\b",
    re.I)
_DATE = re.compile(rf"\b(?:({'|'.join(MONTHS)})\s+(\d{{1,2}})(?:st|nd|rd|th)?|(\d{{4}}-\d{{2}}-\d{{2}}))\b", re.I)
_QUANTITY = re.compile(rf"\b({_NUMBER})\s?({'|'.join(sorted(map(re.escape, QUANTITY_UNITS), key=len, reverse=True))})(?![\w])",
                       re.I)
_CODE = re.compile(r"\b([A-Z]{1,3}-?\d{1,5}[A-Z]?)\b")
_NAME = re.compile(r"\b([A-Z][a-z]+(?:[ -][A-Z][a-z0-9]+)*)\b")
_YES_NO = re.compile(r"^\W*(yes|no)\b", re.I)
_SENTENCE_START = re.compile(r"(?:^|[.!?:\n]\s*)([A-Z][a-z]+)")
COMMON_CAPITALISED = {"I", "You", "We", "Our", "Your", "The", "This", "That", "These", "If", "It", "Please",
                      "Thanks", "Hi", "Hello", "Sorry", "Yes", "No", "A", "An", "Contact", "Call", "Visit", "Use",
                      "Try", "Send", "Email", "Open", "Check", "Go", "See", "Ask", "Monday", "Tuesday", "Wednesday",
                      "Thursday", "Friday", "Saturday", "Sunday"}
"""Capitalised words that are not names (and are dropped from the front of a name-like run of words)."""


def _number(text: str) -> float:
    text = text.lower()
    if text in WORD_NUMBERS:
        return float(WORD_NUMBERS[text])
    return float(text.replace(",", ""))


def extract_facts(text: str) -> set[tuple[str, str]]:
    """The facts in ``text`` as a set of ``(kind, value)``; kinds: money, percent, duration:<unit>, date,
    quantity:<unit>, code, name, answer (yes/no)."""
    facts: set[tuple[str, str]] = set()
    taken: list[tuple[int, int]] = []  # spans already read as a fact, so "$5" is not also the number 5

    def add(kind: str, value: float | str, span: tuple[int, int]) -> None:
        if isinstance(value, float):
            value = f"{value:g}"
        facts.add((kind, str(value)))
        taken.append(span)

    def free(span: tuple[int, int]) -> bool:
        return all(span[1] <= a or span[0] >= b for a, b in taken)

    for m in _MONEY.finditer(text):
        add("money", _number(m.group(1) or m.group(2)), m.span())
    for m in _PERCENT.finditer(text):
        if free(m.span()):
            add("percent", _number(m.group(1)), m.span())
    for m in _DURATION.finditer(text):
        unit = m.group(2).lower().rstrip("s")
        add(f"duration:{DURATION_UNITS.get(unit, unit)}", _number(m.group(1)), m.span())
    for m in _DATE.finditer(text):
        value = m.group(3) or f"{m.group(1).lower()} {int(m.group(2))}"
        add("date", value, m.span())
    for m in _QUANTITY.finditer(text):
        if free(m.span()):
            add(f"quantity:{QUANTITY_UNITS[m.group(2).lower()]}", _number(m.group(1)), m.span())
    for m in _CODE.finditer(text):
        if free(m.span()):
            add("code", m.group(1).upper().replace("-", ""), m.span())
    starts = {m.start(1) for m in _SENTENCE_START.finditer(text)}
    for m in _NAME.finditer(text):
        words = m.group(1).split()
        while words and words[0] in COMMON_CAPITALISED:
            words = words[1:]
        if not words or (m.start(1) in starts and len(words) == 1 and len(m.group(1).split()) == 1):
            continue  # a capital that only starts a sentence is no name
        if free(m.span()):
            add("name", " ".join(words).lower(), m.span())
    yes_no = _YES_NO.match(text)
    if yes_no:
        facts.add(("answer", yes_no.group(1).lower()))
    return facts


def compare_facts(answer: str, reference: str) -> tuple[int, int, int]:
    """``(reference facts, of them stated in the answer, of them contradicted by it)``. A reference fact is
    contradicted when the answer states the same kind of fact (a duration in days, an amount of money, yes or
    no) only with other values. Names are never counted as contradicted: another name is not a wrong one."""
    wanted, stated = extract_facts(reference), extract_facts(answer)
    kinds = {kind for kind, _ in stated}
    hit = wanted & stated
    contradicted = sum(1 for kind, value in wanted - stated if kind in kinds and kind != "name")
    return len(wanted), len(hit), contradicted


def supported_facts(answer: str, sources: str) -> tuple[int, int]:
    """``(facts in the answer, of them found in the sources)``: the sources being what the model was shown
    (the prompt, with any retrieved passages). A leading yes or no is a stance, not a fact, and is left out."""
    claimed = {f for f in extract_facts(answer) if f[0] != "answer"}
    return len(claimed), len(claimed & extract_facts(sources))


# -- abstention -------------------------------------------------------------------------------------------

_ABSTAINS = re.compile(
    r"\b(?:I|we)(?:'m| am|'re| are)? (?:can(?:'|’|no)?t|cannot|could(?:n't|n’t| not)|unable to|wasn't able to|"
    r"was not able to|not able to) (?:find|locate|see)\b"
    r"|\b(?:do(?:n't|n’t| not)|does(?:n't|n’t| not)) (?:have|know)(?: any)? (?:that|this|the|enough|any|specific)?"
    r"\s*(?:information|info|details|answer)\b"
    r"|\bI (?:do(?:n't|n’t| not)|don't) know\b"
    r"|\bno (?:information|details|mention) (?:about|on|of)\b"
    r"|\b(?:passages?|documents?|articles?) (?:do(?:n't|n’t| not)|does(?:n't|n’t| not)) "
    r"(?:say|mention|contain|cover|include)\b"
    r"|\bnot (?:covered|mentioned|included) in (?:our|the)\b"
    r"|\bdon(?:'|’)?t want to guess\b", re.I)


def abstains(text: str) -> bool:
    """Whether an answer declines to answer because the information is not available ("I can't find that
    in our help articles", "I don't have information about ...", "the passages don't mention ..."). A
    hand-off sentence alone ("contact our support team") is not an abstention: answers often end with one."""
    return bool(_ABSTAINS.search(text))
