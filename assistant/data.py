"""Training data: read chat JSONL (and two simpler formats), find every problem, describe what is there.

Accepted rows, one JSON object per line:

    {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}, ...]}
    {"prompt": "...", "completion": "..."}                       (one user turn, one answer)
    {"text": "...", "label": "..."}                               (a classification example)

Chat messages may carry extra fields (the demo labels each customer message with ``intent`` and
``sentiment``); they are kept as labels for classification tasks. Evaluation cases
(``{"messages" or "question", "reference"}``) read as conversations whose answer is the reference.

``check_records`` reports every problem at once with ``file:line`` and a reason, so a user fixes a file in
one pass. Nothing downstream runs on data with problems.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from assistant.messages import message_problems


class DataError(ValueError):
    """Data problems a user must fix; the message lists each one with file and line."""


@dataclass
class Record:
    """One row of a data file, normalised."""

    where: str
    """'file:line' of the row, for messages."""
    messages: list[dict[str, str]]
    """role/content only."""
    labels: list[dict[str, str]] = field(default_factory=list)
    """Extra string fields of each message (same length as ``messages``), e.g. intent and sentiment."""
    row: dict = field(default_factory=dict)
    """The parsed row as written."""

    def user_texts(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == "user"]


def jsonl_rows(path: Path) -> Iterator[tuple[str, int, Any, str | None]]:
    """Each non-blank line of a JSONL file as ``(where, line number, row, problem)``: ``where`` is
    'file:line'; when the line is not valid JSON, ``row`` is None and ``problem`` says why."""
    with open(path, "rb") as handle:  # bytes: an invalid UTF-8 byte is a problem of its line, not a U+FFFD
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (f"{path}:{number}", number, None,
                       f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); save the file as UTF-8")
                continue
            if not line.strip():
                continue
            try:
                row, problem = json.loads(line), None
            except json.JSONDecodeError as exc:
                row, problem = None, f"invalid JSON ({exc.msg} at column {exc.colno})"
            except RecursionError:
                row, problem = None, "invalid JSON (nested too deeply)"
            yield f"{path}:{number}", number, row, problem


def read_jsonl(path: Path) -> tuple[list[Record], list[str]]:
    """Parses a JSONL file into records; returns the records and the problems of rows that could not parse.

    Structural checks of conversations are left to ``check_records`` so that all problems come together.
    """
    path = Path(path)
    records: list[Record] = []
    problems: list[str] = []
    if not path.is_file():
        return [], [f"{path}: no such file"]
    for where, _, row, problem in jsonl_rows(path):
        if problem is None:
            record, problem = _normalise(row, where)
        if problem:
            problems.append(f"{where}: {problem}")
        else:
            records.append(record)
    if not records and not problems:
        problems.append(f"{path}: no rows")
    return records, problems


def _normalise(row, where: str) -> tuple[Record | None, str | None]:
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list):
            return None, "'messages' must be a list"
        plain, labels = [], []
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                return None, f"message {i + 1} is not an object"
            plain.append({"role": m.get("role"), "content": m.get("content")})
            labels.append({k: v for k, v in m.items() if k not in ("role", "content") and isinstance(v, str)})
        if "reference" in row:  # an evaluation case: the reference is the answer
            plain.append({"role": "assistant", "content": row["reference"]})
            labels.append({})
        return Record(where, plain, labels, row), None
    if "question" in row and "reference" in row:
        return Record(where, [{"role": "user", "content": row["question"]},
                              {"role": "assistant", "content": row["reference"]}], [{}, {}], row), None
    if "prompt" in row or "completion" in row:
        return Record(where, [{"role": "user", "content": row.get("prompt")},
                              {"role": "assistant", "content": row.get("completion")}], [{}, {}], row), None
    if "text" in row:
        if not isinstance(row.get("label"), (str, int)) or isinstance(row.get("label"), bool):
            return None, "a {text, label} row needs a text or integer 'label'"
        return Record(where, [{"role": "user", "content": row["text"]}], [{"label": str(row["label"])}], row), None
    return None, "unknown row format: expected 'messages', 'prompt'/'completion', or 'text'/'label'"


def example_messages(record: Record) -> tuple[list[dict[str, str]], str | None]:
    """A row of any documented format as one complete example conversation, ending with the answer: chat
    rows as they are (system messages dropped: the template writes its own), prompt/completion rows as a
    user and an assistant turn, and {text, label} rows as the text answered with its label. Returns the
    messages, or a problem when the row is not a complete example."""
    messages = [m for m in record.messages if m.get("role") != "system"]
    if len(messages) == 1 and messages[0].get("role") == "user" and record.labels and "label" in record.labels[0]:
        messages = messages + [{"role": "assistant", "content": record.labels[0]["label"]}]
    problems = message_problems(messages, last="assistant")
    return messages, "; ".join(problems) or None


def read_examples(path: Path) -> list[tuple[str, list[dict[str, str]]]]:
    """Every row of a JSONL file in any documented format, as ('file:line', example conversation) pairs.

    Raises:
        DataError: listing every row that is not valid JSON, of no known format, or not a complete example.
    """
    records, problems = read_jsonl(path)
    examples = []
    for record in records:
        messages, problem = example_messages(record)
        if problem:
            problems.append(f"{record.where}: not a complete example ({problem})")
        else:
            examples.append((record.where, messages))
    if problems:
        raise DataError(format_problems(problems))
    return examples


def conversation_problems(record: Record, need_answer: bool = True) -> list[str]:
    """Role, order and content problems of one conversation."""
    return message_problems(record.messages, last="assistant" if need_answer else None)


# -- duplicates and leakage -----------------------------------------------------------------------------


def normalise_text(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def shingles(text: str, n: int = 5) -> set[str]:
    """Character n-grams of the normalised text: robust for short texts, where one added word would
    change most word n-grams."""
    text = normalise_text(text)
    if len(text) <= n:
        return {text}
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicate_pairs(texts: list[str], threshold: float = 0.8, bands: int = 20, rows: int = 4) -> list[tuple[int, int, float]]:
    """Pairs ``(a, b, similarity)``, ``a < b``, of texts whose character-5-gram Jaccard similarity is at least
    ``threshold``.

    datasketch's MinHash LSH proposes candidate pairs in about linear time (a pair with similarity s becomes a
    candidate with probability 1-(1-s^rows)^bands: 0.9995 at s=0.8 with the defaults), and each candidate is
    then checked exactly, so there are no false positives.
    """
    # Imported here: scripts/fetch_sentiment.py imports this module on a bare Python for its other helpers.
    from datasketch import MinHash, MinHashLSH

    sets = [shingles(t) for t in texts]
    signatures = MinHash.bulk([[s.encode() for s in items] for items in sets], num_perm=bands * rows)
    lsh = MinHashLSH(num_perm=bands * rows, params=(bands, rows))
    candidates = set()
    for index, signature in enumerate(signatures):
        candidates.update((other, index) for other in lsh.query(signature))  # only earlier texts are in yet
        lsh.insert(index, signature)
    pairs = []
    for a, b in sorted(candidates):
        similarity = jaccard(sets[a], sets[b])
        if similarity >= threshold:
            pairs.append((a, b, similarity))
    return pairs


def record_text(record: Record) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in record.messages)


def check_records(
    records: list[Record],
    *,
    need_answer: bool = True,
    count_tokens: Callable[[Record], int] | None = None,
    max_tokens: int | None = None,
    eval_questions: Iterable[tuple[str, str]] = (),
    near_threshold: float = 0.8,
) -> list[str]:
    """Every problem in a set of records, each as 'file:line: reason'.

    Args:
        records: parsed rows (from one or more files).
        need_answer: chat training data must contain assistant turns; classification rows need not.
        count_tokens: tokens of a record as it will be trained (rendered prompt + answer).
        max_tokens: longest allowed record in tokens.
        eval_questions: (where, question) of evaluation cases: a training row that repeats one leaks.
        near_threshold: Jaccard similarity above which two rows count as near duplicates.
    """
    problems = []
    valid: list[Record] = []
    for record in records:
        # a {text, label} row is a classification example: it has no assistant turn by design
        found = conversation_problems(record, need_answer and "text" not in record.row)
        problems.extend(f"{record.where}: {p}" for p in found)
        if not found:
            valid.append(record)

    if count_tokens is not None and max_tokens is not None:
        for record in valid:
            tokens = count_tokens(record)
            if tokens > max_tokens:
                problems.append(f"{record.where}: {tokens} tokens, over the limit of {max_tokens} (max_seq_len)")

    seen: dict[str, str] = {}
    for record in valid:
        key = normalise_text(record_text(record))
        if key in seen:
            problems.append(f"{record.where}: exact duplicate of {seen[key]}")
        else:
            seen[key] = record.where
    unique = [r for r in valid if seen.get(normalise_text(record_text(r))) == r.where]
    for a, b, similarity in near_duplicate_pairs([record_text(r) for r in unique], near_threshold):
        problems.append(f"{unique[b].where}: near duplicate of {unique[a].where} (similarity {similarity:.2f})")

    questions = list(eval_questions)
    if questions:
        asked = {normalise_text(q): where for where, q in questions}
        question_sets = [(where, shingles(q)) for where, q in questions]
        for record in valid:
            for text in record.user_texts():
                key = normalise_text(text)
                if key in asked:
                    problems.append(f"{record.where}: repeats evaluation case {asked[key]} (leakage)")
                    continue
                mine = shingles(text)
                for where, theirs in question_sets:
                    if len(mine) >= 10 and jaccard(mine, theirs) >= near_threshold:
                        problems.append(f"{record.where}: nearly repeats evaluation case {where} (leakage)")
                        break
    return problems


def sort_problems(problems: list[str]) -> list[str]:
    """Orders 'file:line: reason' messages by file, then line number."""
    def key(problem: str):
        path, _, rest = problem.partition(":")
        line = rest.split(":", 1)[0]
        return (path, int(line) if line.isdigit() else 0)

    return sorted(problems, key=key)


def format_problems(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n  " + "\n  ".join(sort_problems(problems))


def eval_questions(path: Path) -> list[tuple[str, str]]:
    """(file:line, first user question) of each evaluation case, for the leakage check."""
    records, problems = read_jsonl(path)
    if problems:
        raise DataError("evaluation file problems:\n  " + "\n  ".join(problems))
    return [(r.where, r.user_texts()[0]) for r in records if r.user_texts()]


def label_counts(records: list[Record], field: str | None = None) -> dict[str, dict[str, int]]:
    """How often each label occurs, per label field of the user messages (only ``field`` when given), most
    frequent first."""
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        for message, labels in zip(record.messages, record.labels):
            for name, value in labels.items():
                if message["role"] == "user" and (field is None or name == field):
                    counts.setdefault(name, {})[value] = counts.setdefault(name, {}).get(value, 0) + 1
    return {name: dict(sorted(c.items(), key=lambda kv: -kv[1])) for name, c in counts.items()}


def describe_labels(field: str, counts: dict[str, int], ratio: float = 3.0) -> list[str]:
    """Lines that show a label field's distribution, and a warning when the most frequent label is more than
    ``ratio`` times as frequent as the least (a classifier then learns to answer the majority label)."""
    total = sum(counts.values())
    if not total:
        return []
    lines = [f"{field}: " + ", ".join(f"{label} {n} ({n / total:.0%})" for label, n in counts.items())]
    most, least = max(counts.values()), min(counts.values())
    if len(counts) > 1 and most > ratio * least:
        rare = min(counts, key=counts.get)
        lines.append(f"  warning: imbalanced labels ({rare!r} is {least / total:.0%} of {field}); a classifier trained "
                     "on this tends to answer the frequent labels. For a label task, `balance: true` in its "
                     "tasks[] entry resamples the classes to equal counts.")
    return lines


def token_stats(lengths: list[int]) -> dict[str, float]:
    """Count, mean, median, 95th percentile and maximum of a list of token counts."""
    if not lengths:
        return {"count": 0}
    ordered = sorted(lengths)

    def pct(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]

    return {"count": len(ordered), "total": sum(ordered), "mean": sum(ordered) / len(ordered),
            "median": pct(0.5), "p95": pct(0.95), "max": ordered[-1]}
