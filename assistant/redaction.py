"""Personal data out of stored text: emails, phone numbers, card numbers and a domain's own patterns, each
replaced by a typed placeholder ([EMAIL], [PHONE], [CARD], [ORDER]).

    redactor = Redactor(load_patterns(["ORDER=TW-\\d{7}"]))
    redactor.redact("Mail jo@example.com about TW-1234567")    # 'Mail [EMAIL] about [ORDER]'

Rules, not a model: presidio needs spaCy models (a download), and scrubadub misses card numbers written in
groups and pulls in NLTK and scikit-learn. Phone numbers are found by ``phonenumbers`` (Google's
libphonenumber metadata; only numbers valid for their region: +-prefixed ones in any country, the rest read
as US numbers). Card numbers are 13 to 19 digits, in groups split by single spaces or dashes, that pass the
Luhn check, so that most order and tracking numbers are left alone. Emails are matched by their shape.
Domain patterns are regular expressions with a label, from the command line or a YAML file.

Everything outside the items found is left byte for byte as it was. Items the domain itself publishes (the
support address and phone number in its documents) are not personal: ``published`` keeps them, so that an
answer quoting them is stored as it was shown.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from assistant.settings_reader import ConfigError

EMAIL, PHONE, CARD = "EMAIL", "PHONE", "CARD"
KINDS = (EMAIL, CARD, PHONE)
"""The built-in kinds, in the order they claim text (a domain pattern claims it before any of them)."""

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![\w-])")
_DIGIT_RUN = re.compile(r"(?<![\d])\d+(?:[ -]\d+)*(?![\d])")
"""Digit groups split by single spaces or dashes: where a card number may be."""
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_PHONE_DIGITS = 7
"""Texts with fewer digits than this hold no phone number: the phone matcher is not run on them."""


@dataclass(frozen=True)
class Pattern:
    """A domain's own kind of personal data: what replaces it and what finds it."""

    label: str
    """Upper case; the placeholder is [LABEL]."""
    regex: re.Pattern
    source: str
    """Where it was given (an option or a file), for error messages."""


@dataclass(frozen=True)
class Found:
    start: int
    end: int
    kind: str
    key: str
    """The item normalised (an email lower-cased, a phone in E.164, a card's digits), to tell a published
    item wherever it appears."""


def load_patterns(specs: Sequence[str] = (), files: Sequence[str | Path] = ()) -> list[Pattern]:
    """Domain patterns from ``LABEL=REGEX`` options and from YAML files (``LABEL: REGEX`` or ``LABEL: [REGEX,
    ...]``). Every malformed one is reported at once, named by where it came from.

    Raises:
        ConfigError: a bad label, a regular expression that does not compile or that matches empty text.
    """
    from assistant.settings_reader import read_settings_file

    given: list[tuple[str, Any, str]] = []
    problems: list[str] = []
    for spec in specs:
        label, sep, regex = spec.partition("=")
        if not sep:
            problems.append(f"--redact-pattern {spec}: expected LABEL=REGEX, e.g. ORDER=TW-\\d{{7}}")
            continue
        given.append((label.strip(), regex, f"--redact-pattern {spec}"))
    for file in files:
        path = Path(file)
        for label, value in read_settings_file(path, "redaction patterns file").items():
            for i, regex in enumerate(value if isinstance(value, list) else [value]):
                where = f"{path}: {label}" + (f"[{i}]" if isinstance(value, list) else "")
                given.append((str(label), regex, where))
    patterns = []
    for label, regex, where in given:
        if not _LABEL.fullmatch(label):
            problems.append(f"{where}: the label must be a word of letters, digits and _ (it becomes [{label}])")
            continue
        if not isinstance(regex, str) or not regex:
            problems.append(f"{where}: expected a regular expression (text), got {regex!r}")
            continue
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            problems.append(f"{where}: not a regular expression ({exc})")
            continue
        if compiled.fullmatch(""):
            problems.append(f"{where}: matches empty text, so it would match everywhere")
            continue
        patterns.append(Pattern(label.upper(), compiled, where))
    if problems:
        raise ConfigError("\n".join(problems))
    return patterns


class Redactor:
    """Finds personal data in text and replaces it with placeholders.

    Args:
        patterns: the domain's own kinds (``load_patterns``), checked before the built-in ones.
        region: the country whose numbering plan reads phone numbers written without a leading + (ISO code).
    """

    def __init__(self, patterns: Sequence[Pattern] = (), region: str = "US"):
        self.patterns = list(patterns)
        self.region = region
        self.public: set[tuple[str, str]] = set()

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys([p.label for p in self.patterns] + list(KINDS)))

    def published(self, texts: Iterable[str]) -> "Redactor":
        """Keeps every item found in ``texts`` (the domain's documents) wherever it appears later; returns
        self."""
        for text in texts:
            self.public.update((f.kind, f.key) for f in self.find(text, keep_public=False))
        return self

    def find(self, text: str, keep_public: bool = True) -> list[Found]:
        """The items in ``text``, in order, none overlapping: a domain pattern first, then emails, cards and
        phone numbers, each only where no earlier one claimed the text."""
        found: list[Found] = []

        def claim(start: int, end: int, kind: str, key: str) -> None:
            if start < end and all(end <= f.start or start >= f.end for f in found):
                found.append(Found(start, end, kind, key))

        for pattern in self.patterns:
            for m in pattern.regex.finditer(text):
                claim(m.start(), m.end(), pattern.label, m.group())
        for m in _EMAIL.finditer(text):
            claim(m.start(), m.end(), EMAIL, m.group().lower())
        for start, end, digits in _cards(text):
            claim(start, end, CARD, digits)
        if sum(c.isdigit() for c in text) >= _PHONE_DIGITS:
            import phonenumbers

            for m in phonenumbers.PhoneNumberMatcher(text, self.region, leniency=phonenumbers.Leniency.VALID):
                claim(m.start, m.end, PHONE, phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164))
        if keep_public:
            found = [f for f in found if (f.kind, f.key) not in self.public]
        return sorted(found, key=lambda f: f.start)

    def redact(self, text: str, counts: Counter | None = None) -> str:
        """``text`` with each item replaced by its placeholder; ``counts`` (when given) adds one per item by
        kind."""
        if not text:
            return text
        out, last = [], 0
        for f in self.find(text):
            out += [text[last:f.start], f"[{f.kind}]"]
            last = f.end
            if counts is not None:
                counts[f.kind] += 1
        return "".join(out) + text[last:] if out else text

    def redact_messages(self, messages: list[dict[str, Any]], counts: Counter | None = None) -> list[dict[str, Any]]:
        """A conversation with every message's text redacted (roles and other fields as they were)."""
        return [_redact_value(message, self, counts) for message in messages]


def _redact_value(value: Any, redactor: Redactor, counts: Counter | None) -> Any:
    if isinstance(value, str):
        return redactor.redact(value, counts)
    if isinstance(value, list):
        return [_redact_value(v, redactor, counts) for v in value]
    if isinstance(value, dict):
        return {k: v if k in ("role", "type") else _redact_value(v, redactor, counts) for k, v in value.items()}
    return value


def _cards(text: str) -> list[tuple[int, int, str]]:
    """Card numbers: in each run of digit groups, spans of whole groups with 13 to 19 digits that pass the
    Luhn check, the longest first (a year or a quantity next to a card stays out of it)."""
    found = []
    for run in _DIGIT_RUN.finditer(text):
        groups = [(m.start() + run.start(), m.end() + run.start()) for m in re.finditer(r"\d+", run.group())]
        spans = []
        for i in range(len(groups)):
            digits = ""
            for j in range(i, len(groups)):
                digits += text[groups[j][0]:groups[j][1]]
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn_valid(digits):
                    spans.append((i, j, digits))
        taken: set[int] = set()
        for i, j, digits in sorted(spans, key=lambda s: (-len(s[2]), s[0])):
            if taken.isdisjoint(range(i, j + 1)):
                taken.update(range(i, j + 1))
                found.append((groups[i][0], groups[j][1], digits))
    return found


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of card numbers: from the right, every second digit doubled (less 9 above 9), and
    the sum a multiple of 10."""
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def documents_text(folders: Iterable[str | Path]) -> list[str]:
    """The passages of every documents folder: what the domain publishes."""
    from assistant.context import load_documents

    return [p.text for folder in dict.fromkeys(str(f) for f in folders) for p in load_documents(Path(folder))]
