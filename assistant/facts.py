"""Checkable facts in a text, in any domain: amounts of money, percentages, durations, dates, quantities with
their unit (compound units too: m², kWh/m²/year, km/h), both ends of a range, references to regulations,
standards and their sections (AFS 1982:3, ISO 9001, chapter 7 § 12), ages, counted nouns (3 passages),
codes, proper and product names, and a leading yes or no. The fact metrics (eval/metrics/key_facts, grounding,
context_recall), the preference scoring and the counterfactual probe compare them between an answer and its
reference or its sources.

Each fact is ``(kind, value)`` with the value normalised, so "$49.99" and "49.99 dollars" are the same fact,
"thirty days" and "30 days" too, "15 m2" and "15 square metres" too; and "14 days" is a *different value of the
same kind* as "30 days": that is what counts as a contradiction. Extraction is rules, not a model:
deterministic, offline, and fast. The one data file read is wordfreq's English word list, to tell a name that
starts a sentence ("Friggebod: max 15 m²") from an ordinary word capitalised there ("Returns are easy").
"""

from __future__ import annotations

import functools
import re

WORD_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "fourteen": 14, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
    "forty-five": 45, "sixty": 60, "ninety": 90, "hundred": 100, "a": 1, "an": 1,
}
DURATION_UNITS = {"second": "second", "sec": "second", "minute": "minute", "min": "minute", "hour": "hour",
                  "hr": "hour", "day": "day", "business day": "business day", "working day": "business day",
                  "week": "week", "month": "month", "year": "year", "yr": "year"}
COUNTED_UNITS = {"cups": "cup", "cup": "cup", "shots": "shot", "shot": "shot", "items": "item", "item": "item",
                 "times": "time"}
"""Units that count things: never the numerator of a compound unit ("3 times a day" stays a count of times)."""
MEASURE_UNITS = {
    # the demo's units, read as before
    "kg": "kg", "g": "g", "grams": "g", "gram": "g", "ml": "ml", "l": "l", "litre": "l", "liter": "l",
    "litres": "l", "liters": "l", "cm": "cm", "mm": "mm", "bar": "bar", "w": "W", "watts": "W", "watt": "W",
    "v": "V", "volts": "V", "°c": "°C", "°f": "°F",
    # length, area, mass, volume
    "m": "m", "km": "km", "µm": "µm", "ft": "ft", "foot": "ft", "feet": "ft", "inch": "in", "inches": "in",
    "yd": "yd", "yards": "yd", "mi": "mi", "miles": "mi", "mile": "mi", "sqm": "m²", "mg": "mg", "µg": "µg",
    "tonnes": "t", "tonne": "t", "oz": "oz", "ounces": "oz", "ounce": "oz", "lb": "lb", "lbs": "lb",
    "dl": "dl", "cl": "cl", "gal": "gal", "gallons": "gal", "gallon": "gal",
    "metres": "m", "metre": "m", "meters": "m", "meter": "m", "kilometres": "km", "kilometre": "km",
    "kilometers": "km", "kilometer": "km", "centimetres": "cm", "centimetre": "cm", "centimeters": "cm",
    "centimeter": "cm", "millimetres": "mm", "millimetre": "mm", "millimeters": "mm", "millimeter": "mm",
    "kilograms": "kg", "kilogram": "kg", "kilos": "kg", "milligrams": "mg", "milligram": "mg",
    # energy, power, electricity, pressure, sound, light, data, speed
    "kw": "kW", "gw": "GW", "wh": "Wh", "kwh": "kWh", "mwh": "MWh", "gwh": "GWh", "kilowatts": "kW",
    "kilowatt": "kW", "kilowatt-hours": "kWh", "kilowatt-hour": "kWh", "kv": "kV", "ma": "mA", "mah": "mAh",
    "amps": "A", "amperes": "A", "hz": "Hz", "khz": "kHz", "mhz": "MHz", "ghz": "GHz", "pa": "Pa", "kpa": "kPa",
    "mpa": "MPa", "hpa": "hPa", "mbar": "mbar", "psi": "psi", "kn": "kN", "kj": "kJ", "mj": "MJ", "kcal": "kcal",
    "cal": "cal", "calories": "cal", "db": "dB", "decibels": "dB", "lm": "lm", "lux": "lx", "lx": "lx",
    "kb": "kB", "mb": "MB", "gb": "GB", "tb": "TB", "kbps": "kbit/s", "mbps": "Mbit/s", "gbps": "Gbit/s",
    "mph": "mph", "kph": "km/h", "rpm": "rpm", "dpi": "dpi", "ppm": "ppm", "°": "°", "degrees": "°",
}
"""Units of measure by their lower-case spellings, each to the symbol its facts carry."""
PER_TIME = {"seconds": "s", "second": "s", "secs": "s", "sec": "s", "s": "s", "minutes": "min", "minute": "min",
            "mins": "min", "min": "min", "hours": "h", "hour": "h", "hrs": "h", "hr": "h", "h": "h", "days": "day",
            "day": "day", "weeks": "week", "week": "week", "months": "month", "month": "month", "years": "year",
            "year": "year", "yrs": "year", "yr": "year", "annum": "year"}
"""Time units after a "/" or "per" (km/h, kWh/m²/year): there only, since "5 h" or "9 s" alone is too ambiguous."""
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")


def _alternation(words) -> str:
    return "|".join(sorted(map(re.escape, words), key=len, reverse=True))  # longest first: "kwh" before "kw"


_NUMBER = r"\d+(?:[.,]\d+)*"
_WORDS = _alternation(w for w in WORD_NUMBERS if len(w) > 2)
_MONEY = re.compile(rf"(?:[$€£]\s?({_NUMBER}))|(?:\b({_NUMBER})\s?(?:dollars|usd|eur|euros?|gbp|pounds|kr|kronor|"
                    rf"sek|nok|dkk|chf)\b)", re.I)
_PERCENT = re.compile(rf"\b({_NUMBER})\s?(?:%|percent\b|per cent\b)", re.I)
_DURATION = re.compile(
    rf"\b({_NUMBER}|{_WORDS}|an?)[\s-]+(business days?|working days?|seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|"
    rf"weeks?|months?|years?|yrs?)\b", re.I)
_DATE = re.compile(rf"\b(?:({'|'.join(MONTHS)})\s+(\d{{1,2}})(?:st|nd|rd|th)?|(\d{{4}}-\d{{2}}-\d{{2}}))\b", re.I)
# A measure unit, with "square"/"sq"/"cubic" or a power ("m2", "m^2", "m²"), and any "/x" or "per x" after it.
_AREA = r"(?:square|sq\.?|cubic|cu\.?)\s?"
_POWER = r"(?:[²³]|\^?[23](?!\d))"
_DENOMINATOR = rf"(?:{_AREA})?(?:{_alternation([*MEASURE_UNITS, *PER_TIME])})(?:{_POWER})?"
_MEASURE = rf"(?:{_AREA})?(?:{_alternation(MEASURE_UNITS)})(?:{_POWER})?(?:(?:\s?/\s?|\s+per\s+){_DENOMINATOR})*"
_QUANTITY = re.compile(rf"\b({_NUMBER})\s?(?:({_MEASURE})|({_alternation(COUNTED_UNITS)}))(?!\w)", re.I)
# "between 2 and 4 weeks", "20-30 years", "$10-20", "6 or 12 months": the first end of a range (or of a pair of
# alternatives), up to where the second one starts.
_RANGE = re.compile(rf"(\bbetween\s+)?([$€£]?)(?<![\d.,:/-])({_NUMBER})"  # not the tail of 1-800-555
                    r"\s*(-|–|—|\bto\b|\bor\b|\band\b)\s*([$€£]?)(?=\d)", re.I)
# A document's designator and number (AFS 1982:3, ISO 9001, EN 1111:2017, BBR 9:2), then the sections in it.
_DESIGNATOR = re.compile(r"\b([A-Z]{2,6}(?:[-/ ][A-Z]{2,6})*) (\d{1,5}(?:[:.-]\d{1,5})*)(?!\w)")
SECTION_WORDS = {"chapter": "chapter", "chap.": "chapter", "ch.": "chapter", "section": "section",
                 "sec.": "section", "article": "article", "art.": "article", "clause": "clause",
                 "paragraph": "paragraph", "para.": "paragraph", "part": "part", "annex": "annex",
                 "appendix": "appendix", "§": "§", "§§": "§"}
_SECTION_PART = (rf"(?:({_alternation(SECTION_WORDS)})s?\s*)"  # plural forms too: "sections 3" is section 3
                 r"(\d+[a-z]?(?:[.:]\d+[a-z]?)*(?!\w)|(?-i:[A-Z])\b)")
_SECTIONS = re.compile(rf"(?<![\w§]){_SECTION_PART}(?:\s+{_SECTION_PART})*", re.I)  # "chapter 7 § 12": one
_SECTION_STEP = re.compile(_SECTION_PART, re.I)
# Ages: the explicit forms are read before durations ("65 years old" is an age, not a duration); a bare
# "under 18" only after every rule with a unit ("under 5 minutes" is a duration, "over $75" money).
AGE_SIDES = {"under": "under", "below": "under", "younger than": "under", "over": "over", "above": "over",
             "older than": "over"}
_SIDE = _alternation(AGE_SIDES)
_AGE = re.compile(rf"\b(?:({_SIDE})\s+(?:the\s+)?age\s+of\s+(\d{{1,3}})"
                  rf"|(?:({_SIDE})\s+)?(\d{{1,3}})[\s-]+years?[\s-]+(?:olds?|of\s+age)\b"
                  rf"|aged?\s+(\d{{1,3}})(\+|\s+(?:and|or)\s+(?:over|older|up))?)", re.I)
_BARE_AGE = re.compile(rf"\b({_SIDE})\s+(\d{{1,3}})\b(?![.,]\d|\s*(?:[-–+%]|(?:to|or|and)\s+\d))", re.I)
_CODE = re.compile(r"\b([A-Z]{1,3}-?\d{1,5}[A-Z]?)\b")
# A number and the noun it counts: "3 passages", "two bedrooms", "10 backup codes", "a 16-digit number".
_COUNT = re.compile(rf"\b(?:({_NUMBER}|(?i:{_WORDS}))\s+|(\d+)-(?=[a-z]))([a-z]+)(?: ([a-z]+))?\b")
NOT_NOUNS = {
    "a", "an", "the", "of", "and", "or", "nor", "to", "in", "on", "at", "for", "from", "by", "with", "per", "via",
    "is", "are", "was", "were", "be", "been", "will", "can", "may", "must", "should", "would", "could", "has",
    "have", "had", "do", "does", "did", "it", "its", "this", "that", "these", "those", "we", "you", "they", "he",
    "she", "our", "your", "their", "his", "her", "more", "less", "fewer", "than", "so", "if", "as", "but", "not",
    "no", "also", "only", "each", "all", "any", "some", "other", "others", "most", "up", "out", "off", "over",
    "under", "about", "into", "after", "before", "until", "then", "when", "where", "which", "who", "plus",
    "minus", "times", "percent", "am", "pm", "ago", "later", "earlier", "again", "here", "there", "yet",
    "always", "never", "still", "just", "even", "both", "either", "such", "like", "within", "without",
    "between", "among", "across", "through", "around", "against", "during", "since",
}
"""Words that follow a number without being what it counts ("one of the", "10 or more", "2 is enough")."""
IRREGULAR_PLURALS = {"people": "person", "children": "child", "men": "man", "women": "woman", "teeth": "tooth",
                     "mice": "mouse", "geese": "goose", "lives": "life", "knives": "knife", "shelves": "shelf"}
_NAME = re.compile(r"\b([A-Z][a-z]+(?:[A-Z][a-z0-9]+)*(?:[ -][A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)*)*)\b")
_YES_NO = re.compile(r"^\W*(yes|no)\b", re.I)
_SENTENCE_START = re.compile(r"(?:^|[.!?:;)\]\n]\s*)[*_\"'“‘(\[>#\-•–—\s]*([A-Z][a-z]+)")
"""A capitalised word that starts a sentence, a line or a list item, after any markup (bullets, bold, quotes,
brackets, headings): capitalised there by position, so it is a name only when English rarely uses it."""
COMMON_CAPITALISED = {
    "I", "You", "We", "Our", "Your", "The", "This", "That", "These", "If", "It", "Please", "Thanks", "Hi", "Hello",
    "Sorry", "Yes", "No", "A", "An", "Contact", "Call", "Visit", "Use", "Try", "Send", "Email", "Open", "Check", "Go",
    "See", "Ask", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
    # words that open a sentence before a name ("With CarePlus, ..."), so the name is read without them
    "With", "Without", "For", "In", "On", "At", "After", "Before", "When", "Once", "Since", "From", "To", "Both",
    "Each", "All", "Any", "Every", "Its", "Their", "There", "Here", "What", "Why", "How", "While", "Until", "Because",
    "Unlike", "And", "But", "Or", "So", "Also", "Then", "Only", "Just", "They", "He", "She", "My", "His", "Her",
    "However", "Do", "Does", "Is", "Are", "Can",
}
"""Capitalised words that are not names (and are dropped from the front of a name-like run of words)."""
RARE_ZIPF = 2.5
"""A word that starts a sentence is a name when English uses it less than about once in three million words
(wordfreq's Zipf scale: log10 of uses per billion words). Ordinary words that open a sentence sit above: Returns
4.6, Orders 4.7, Shipping 4.5, Warranty 3.7, Refunds 3.4, and the rarer Unopened 2.9, Expedited 3.0, Unplug 3.0;
coined and foreign names sit below: CarePlus 0, Paywise 0, Friggebod 0, Boverket 0. A real English word used as a
name stays skipped there, as before (Tidewater 2.6): it is found wherever it does not start a sentence."""
_IMPERATIVE = re.compile(r"\s+(?:the|a|an|your|its|it|them|this|these|those|with|every|each|all|any)\b", re.I)
"""What follows a verb, not a name: a rare first word before an object is an imperative the word list does not
know ("Descale the machine", "Preheat your cup"), where a name is followed by its verb ("CarePlus covers")."""


def _number(text: str) -> float:
    text = text.lower()
    if text in WORD_NUMBERS:
        return float(WORD_NUMBERS[text])
    return float(text.replace(",", ""))


def _unit(text: str) -> str:
    """The symbol of a measure unit as written: "kWh per square metre per year" -> "kWh/m²/year", "m2" -> "m²"."""
    symbols = []
    for part in re.split(r"\s*/\s*|\s+per\s+", text.strip(), flags=re.I):
        power, part = "", part.lower()
        area = re.match(_AREA, part)
        if area:
            power, part = ("³" if part.startswith("cu") else "²"), part[area.end():]
        elif part[-1] in "23²³" and part.rstrip("^23²³") in MEASURE_UNITS:
            power, part = ("³" if part[-1] in "3³" else "²"), part.rstrip("^23²³")
        symbols.append(MEASURE_UNITS.get(part, PER_TIME.get(part, part)) + power)
    return "/".join(symbols)


def _spread_ranges(text: str) -> str:
    """``text`` with the unit of a range's second end written after its first one too: "20-30 years" reads as
    "20 years - 30 years", "between 2 and 4 weeks" as "between 2 weeks and 4 weeks", "$10-20" as "$10-$20", "6 or
    12 months" as "6 months or 12 months", so that each end is a fact of the same kind."""
    def spread(m: re.Match) -> str:
        between, first_currency, first, joint, second_currency = m.groups()
        if joint.lower() == "and" and not between:
            return m.group(0)  # "2 and 4 weeks" is two things, not a range
        if any(a <= m.start(3) < b for a, b in numbered):
            return m.group(0)  # "ISO 9001-2015", "2026-11-02": one number of a reference or a date
        if first_currency and not second_currency:
            return m.group(0) + first_currency
        second = re.match(_NUMBER, text[m.end():]).group(0)
        for rule in (_PERCENT, _MONEY, _DURATION, _QUANTITY, _COUNT):
            after = rule.match(text, m.end())
            counted = _count_at(after) if after and rule is _COUNT else None
            if after and (rule is not _COUNT or counted):
                unit = text[m.end() + len(second):counted[1][1] if counted else after.end()]
                return f"{between or ''}{first_currency}{first}{unit} {joint} {second_currency}"
        return m.group(0)

    numbered = [m.span() for rule in (_DESIGNATOR, _SECTIONS, _DATE) for m in rule.finditer(text)]
    return _RANGE.sub(spread, text)


def _singular(word: str) -> str:
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if re.search(r"(?:ch|sh|x|ss|z)es$", word):
        return word[:-2]
    return word[:-1] if _plural(word) else word


def _plural(word: str) -> bool:
    return word in IRREGULAR_PLURALS or (len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")))


def _count_at(m: re.Match) -> tuple[str, tuple[int, int]] | None:
    """What a match of ``_COUNT`` counts and the span of its number and noun; None when it counts nothing."""
    number, first, second = _number(m.group(1) or m.group(2)), m.group(3), m.group(4)
    one_word = (m.start(), m.end(3))
    if first in NOT_NOUNS or len(first) < 3:
        return None
    if m.group(2):
        return first, one_word  # "16-digit", "5-star": the hyphen makes the word a measure of the number
    if number == 1 and not m.group(1).isdigit():
        return None  # "one arrives", "one of them", "one free exchange": "one" is a pronoun as often as a count
    if second and second not in NOT_NOUNS and _plural(second) and not _plural(first):
        return f"{first} {_singular(second)}", m.span()  # "10 backup codes": a modifier and its plural noun
    if _plural(first):
        return _singular(first), one_word
    if number == 1 and (second is None or second in NOT_NOUNS):
        return first, one_word  # "1 passage.": a singular noun only where no plural one can follow
    return None


@functools.lru_cache(maxsize=4096)
def _rare_word(word: str) -> bool:
    import wordfreq  # late: its word list loads on the first look-up, and many callers never need it

    return wordfreq.zipf_frequency(word, "en") < RARE_ZIPF


def extract_facts(text: str) -> set[tuple[str, str]]:
    """The facts in ``text``.

    Args:
        text: any text (an answer, a reference, retrieved passages).

    Returns:
        A set of ``(kind, value)``; kinds: money, percent, duration:<unit>, date, quantity:<unit>, reference,
        age, code, count:<noun>, name, answer (yes/no).
    """
    facts: set[tuple[str, str]] = set()
    taken: list[tuple[int, int]] = []  # spans already read as a fact, so "$5" is not also the number 5
    text = _spread_ranges(text)

    def add(kind: str, value: float | str, span: tuple[int, int]) -> None:
        if isinstance(value, float):
            value = f"{value:g}"
        facts.add((kind, str(value)))
        taken.append(span)

    def free(span: tuple[int, int]) -> bool:
        return all(span[1] <= a or span[0] >= b for a, b in taken)

    # The order is the precedence: a rule reads only what no earlier one took. Units before ages, references and
    # counts ("under 5 minutes", "9 bar"), but explicit ages before durations ("65 years old"); a reference before
    # counts and codes ("ISO 9001 certified"); names last, so "Section 4.2" is a reference and no name.
    for m in _MONEY.finditer(text):
        add("money", _number(m.group(1) or m.group(2)), m.span())
    for m in _PERCENT.finditer(text):
        if free(m.span()):
            add("percent", _number(m.group(1)), m.span())
    for m in _AGE.finditer(text):
        side, years, older = m.group(1) or m.group(3), int(m.group(2) or m.group(4) or m.group(5)), m.group(6)
        value = f"{years}+" if older else f"{AGE_SIDES[side.lower()]} {years}" if side else str(years)
        if free(m.span()):
            add("age", value, m.span())
    for m in _DURATION.finditer(text):
        unit = m.group(2).lower().rstrip("s")
        if free(m.span()):
            add(f"duration:{DURATION_UNITS.get(unit, unit)}", _number(m.group(1)), m.span())
    for m in _DATE.finditer(text):
        if free(m.span()):
            add("date", m.group(3) or f"{m.group(1).lower()} {int(m.group(2))}", m.span())
    for m in _QUANTITY.finditer(text):
        if free(m.span()):
            unit = _unit(m.group(2)) if m.group(2) else COUNTED_UNITS[m.group(3).lower()]
            add(f"quantity:{unit}", _number(m.group(1)), m.span())
    for m in _DESIGNATOR.finditer(text):
        if free(m.span()):
            add("reference", f"{' '.join(m.group(1).split())} {m.group(2)}", m.span())
    for m in _SECTIONS.finditer(text):
        steps = [f"{SECTION_WORDS[s.group(1).lower()]} {s.group(2)}" for s in _SECTION_STEP.finditer(m.group(0))]
        if free(m.span()):
            add("reference", " ".join(steps), m.span())
    for m in _CODE.finditer(text):
        if free(m.span()):
            add("code", m.group(1).upper().replace("-", ""), m.span())
    for m in _COUNT.finditer(text):
        counted = _count_at(m)
        if counted and free(counted[1]):
            add(f"count:{counted[0]}", _number(m.group(1) or m.group(2)), counted[1])
    for m in _BARE_AGE.finditer(text):
        if free(m.span()) and 0 < int(m.group(2)) <= 120:
            add("age", f"{AGE_SIDES[m.group(1).lower()]} {int(m.group(2))}", m.span())
    starts = {m.start(1) for m in _SENTENCE_START.finditer(text)}
    for m in _NAME.finditer(text):
        words = m.group(1).split()
        while words and words[0] in COMMON_CAPITALISED:
            words = words[1:]
        if not words or (m.start(1) in starts and len(m.group(1).split()) == 1
                         and (not _rare_word(words[0]) or _IMPERATIVE.match(text, m.end()))):
            continue  # a common word or a verb, capitalised only because it starts a sentence, is no name
        if free(m.span()):
            add("name", " ".join(words).lower(), m.span())
    yes_no = _YES_NO.match(text)
    if yes_no:
        facts.add(("answer", yes_no.group(1).lower()))
    return facts


def _rival_key(kind: str, value: str) -> tuple[str, ...] | None:
    """What a stated fact must share with a reference fact to contradict it; None where nothing can."""
    if kind == "name":
        return None  # another name is not a wrong one
    if kind == "reference":
        # Another number in the same series or the same kind of section ("BBR 9:3" for "BBR 9:2", "section 4.3"
        # for "section 4.2") points at the wrong rule; another document ("PBL 9" for "BBR 9:2") may be a second,
        # correct source, so it only leaves the reference's one unstated.
        return kind, value.split()[0]
    return (kind,)


def compare_facts(answer: str, reference: str) -> tuple[int, int, int]:
    """``(reference facts, of them stated in the answer, of them contradicted by it)``. A reference fact is
    contradicted when the answer states the same kind of fact (a duration in days, an amount of money, a count
    of bedrooms, an age, yes or no; for references, the same series or kind of section) only with other values.
    Names are never counted as contradicted: another name is not a wrong one."""
    wanted, stated = extract_facts(reference), extract_facts(answer)
    rivals = {_rival_key(*fact) for fact in stated} - {None}
    hit = wanted & stated
    contradicted = sum(1 for fact in wanted - stated if _rival_key(*fact) in rivals)
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
