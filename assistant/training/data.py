"""Training data for a run: every task's rows read, checked and rendered exactly as served, split into
training and validation by conversation, and mixed by task weight. (No transformers at import: the data
check verb uses it before any model loads.)

Every example is rendered by ``Bot.encode``, the same code that builds the prompt when the adapter is
served, and its labels cover only the answer tokens (the reply and its end-of-turn marker).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from assistant.artifacts import file_sha256
from assistant.config import Variant
from assistant.context import ContextError
from assistant.data import DataError, Record, check_records, eval_questions, format_problems, read_jsonl, token_stats
from assistant.generate import IGNORE
from assistant.training.config import TaskSettings, TrainConfig
from assistant.variants import load_variant


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    task: str
    where: str


# -- building examples ------------------------------------------------------------------------------------


def serving_variant(config: TrainConfig) -> Variant:
    """The variant the adapter is trained with and served with (without the adapter itself)."""
    variant = load_variant(config.resolve(config.variant) if config.variant else None, root=config.root)
    if config.quantization:
        variant.model.quantization = config.quantization
    variant.model.adapter = None
    return variant


def task_variant(variant: Variant, task: TaskSettings, labels: list[str]) -> Variant:
    """Chat tasks use the serving variant as is; label tasks a classification prompt without retrieval."""
    if task.kind == "chat":
        if task.template:
            variant = dataclasses.replace(variant, prompt=dataclasses.replace(variant.prompt, template=task.template))
        return variant
    instruction = task.instruction.replace("{labels}", ", ".join(labels))
    prompt = dataclasses.replace(variant.prompt, template=task.template or "classify.j2",
                                 variables={**variant.prompt.variables, "instruction": instruction},
                                 few_shot=None, few_shot_count=0)
    context = dataclasses.replace(variant.context, documents=None)
    return dataclasses.replace(variant, prompt=prompt, context=context)


def task_pairs(record: Record, task: TaskSettings) -> list[tuple[list[dict[str, str]], str]]:
    """(history, answer) pairs a record teaches: each assistant reply, or each labelled user message."""
    messages = [m for m in record.messages if m["role"] != "system"]  # the template writes the system message
    pairs = []
    if task.kind == "chat":
        for i, m in enumerate(messages):
            if m["role"] == "assistant" and i > 0:
                pairs.append((messages[:i], m["content"]))
    else:
        labels = [lab for m, lab in zip(record.messages, record.labels) if m["role"] != "system"]
        for m, lab in zip(messages, labels):
            if m["role"] == "user" and task.label_field in lab:
                pairs.append(([{"role": "user", "content": m["content"]}], lab[task.label_field]))
    return pairs


def cited_answer(bot, history: list[dict[str, str]], answer: str, source: Any) -> str:
    """The answer with the number of the first retrieved passage from ``source`` appended (' [2]'), as the
    served prompt numbers them; unchanged when no passage of that document was retrieved, or when the answer
    is the variant's abstention text."""
    if not source or answer.strip() == str(bot.variant.prompt.variables.get("abstention", "")).strip():
        return answer
    for number, passage in enumerate(bot.prepare(history).passages, 1):
        if passage.source == source:
            return f"{answer.rstrip()} [{number}]"
    return answer


def split_records(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Seeded split by conversation, so no conversation is in both halves."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = max(1, round(len(records) * fraction)) if fraction > 0 else 0
    return [records[i] for i in order[held:]], [records[i] for i in order[:held]]


def mixture(per_task: dict[str, list[Example]], tasks: list[TaskSettings], seed: int) -> list[Example]:
    """One epoch of the weighted mixture: ``weight`` copies of each task's examples (0.25: a random
    quarter of them, 1: each once, 2: each twice), shuffled together."""
    rng = random.Random(seed)
    epoch: list[Example] = []
    for task in tasks:
        pool = per_task[task.name]
        whole, part = divmod(task.weight, 1.0)
        epoch += pool * int(whole) + rng.sample(pool, round(part * len(pool)))
    rng.shuffle(epoch)
    return epoch


@dataclass
class DataStats:
    """Counts of the prepared data. The adapter's card.yaml records them under ``data`` with these names."""

    examples: dict[str, int]
    """Training examples per task, before the mixture's weights."""
    validation: dict[str, int]
    """Validation examples per task."""
    mixture: dict[str, int]
    """Examples per task in one epoch of the weighted mixture."""
    tokens: dict[str, float]
    """Token counts of every example, training and validation (``data.token_stats``)."""
    train_tokens_per_epoch: int
    """Tokens in one epoch of the mixture."""
    answer_tokens_per_epoch: int
    """Of those, the answer tokens the loss covers."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class PreparedData:
    train: list[Example]
    validation: dict[str, list[Example]]
    test: list[Example]
    files: dict[str, dict[str, Any]]
    stats: DataStats


def fitted(bot, history: list[dict[str, str]], answer: str, limit: int, truncate: str) -> tuple[list, list] | None:
    """The example's token ids and labels, its last user message cut to fit ``limit`` tokens when ``truncate``
    is 'user_middle' (keep the beginning and the end, '…' between) or 'user_left' (keep the end). Cuts fall
    between words; the longest text that fits is found by bisection. Returns the uncut encoding with
    'refuse', and None when no cut fits, so the caller reports either."""
    if truncate == "refuse":
        return bot.encode(history, answer)

    def attempt(conversation: list[dict[str, str]]) -> tuple[list, list] | None:
        try:
            encoded = bot.encode(conversation, answer)
        except ContextError:  # longer than the model's context window: too long as well
            return None
        return encoded if len(encoded[0]) <= limit else None

    whole = attempt(history)
    if whole is not None:
        return whole
    words = history[-1]["content"].split()

    def cut(kept: int) -> list[dict[str, str]]:
        if truncate == "user_left":
            text = " ".join(words[len(words) - kept:])
        else:
            head = (kept + 1) // 2
            text = " ".join(words[:head] + ["…"] + words[len(words) - (kept - head):])
        return history[:-1] + [{"role": "user", "content": text}]

    best, low, high = None, 1, len(words) - 1
    while low <= high:
        middle = (low + high) // 2
        encoded = attempt(cut(middle))
        if encoded is not None:
            best, low = encoded, middle + 1
        else:
            high = middle - 1
    return best


def balanced(examples: list[Example], labels: list[str], seed: int) -> list[Example]:
    """Every label's examples, repeated (in a seeded random order) up to the most frequent label's count."""
    by_label: dict[str, list[Example]] = {}
    for example, label in zip(examples, labels):
        by_label.setdefault(label, []).append(example)
    most = max((len(group) for group in by_label.values()), default=0)
    rng = random.Random(seed)
    out = []
    for label in sorted(by_label):
        group = by_label[label]
        extra = [group[i % len(group)] for i in rng.sample(range(most), most - len(group))] if len(group) < most else []
        out += group + extra
    return out


def prepare_data(config: TrainConfig, variant: Variant) -> PreparedData:
    """Reads, checks and renders every task's data. Raises DataError listing every problem at once."""
    from assistant.generate import Bot

    t = config.training
    problems: list[str] = []
    leak_from = eval_questions(config.resolve(t.test_file)) if t.test_file else []
    per_task_train: dict[str, list[Example]] = {}
    validation: dict[str, list[Example]] = {}
    files: dict[str, dict[str, Any]] = {}
    lengths: list[int] = []
    for index, task in enumerate(config.tasks):
        path = config.resolve(task.file)
        records, read_problems = read_jsonl(path)
        problems += read_problems
        problems += check_records(records, need_answer=task.kind == "chat", eval_questions=leak_from)
        files[str(path)] = {"sha256": file_sha256(path), "rows": len(records)} if path.is_file() else {}
        if task.kind == "label":
            labels = sorted({lab[task.label_field] for r in records for lab in r.labels if task.label_field in lab})
            if not labels:
                problems.append(f"{path}: no message has the label field {task.label_field!r} (task {task.name})")
                continue
        else:
            labels = []
        bot = Bot(task_variant(variant, task, labels))
        if index == 0 and t.validation_file:
            train_records = records
            val_records, val_problems = read_jsonl(config.resolve(t.validation_file))
            problems += val_problems
        else:
            train_records, val_records = split_records(records, t.validation_split, t.seed + index)
        encoded: dict[str, list[Example]] = {"train": [], "validation": []}
        answers: list[str] = []  # the training examples' answers: for a label task, their labels
        for part, rows in (("train", train_records), ("validation", val_records)):
            for record in rows:
                for history, answer in task_pairs(record, task):
                    if task.cite_field:
                        answer = cited_answer(bot, history, answer, record.row.get(task.cite_field))
                    fit = fitted(bot, history, answer, t.max_seq_len, t.truncate)
                    if fit is None:
                        problems.append(f"{record.where}: over training.max_seq_len = {t.max_seq_len} even with "
                                        f"the user's message cut ({t.truncate})")
                        continue
                    ids, labels_ = fit
                    if len(ids) > t.max_seq_len:
                        problems.append(f"{record.where}: {len(ids)} tokens rendered, over training.max_seq_len "
                                        f"= {t.max_seq_len}" + ("" if t.truncate != "refuse" else
                                        " (training.truncate: user_middle or user_left cuts the user's message "
                                        "to fit)"))
                        continue
                    encoded[part].append(Example(ids, labels_, task.name, record.where))
                    lengths.append(len(ids))
                    if part == "train":
                        answers.append(answer)
        if task.kind == "label" and task.balance:
            encoded["train"] = balanced(encoded["train"], answers, t.seed + index)
        if not encoded["train"]:
            problems.append(f"{path}: no training examples for task {task.name}")
        per_task_train[task.name] = encoded["train"]
        validation[task.name] = encoded["validation"]
    test: list[Example] = []
    if t.test_file and not problems:
        bot = Bot(variant)
        records, _ = read_jsonl(config.resolve(t.test_file))
        for record in records:
            for history, answer in task_pairs(record, TaskSettings(kind="chat")):
                ids, labels_ = bot.encode(history, answer)
                test.append(Example(ids[: t.max_seq_len], labels_[: t.max_seq_len], "test", record.where))
    if problems:
        raise DataError(format_problems(problems))
    train = mixture(per_task_train, config.tasks, t.seed)
    stats = DataStats(
        examples={name: len(v) for name, v in per_task_train.items()},
        validation={name: len(v) for name, v in validation.items()},
        mixture={name: sum(1 for e in train if e.task == name) for name in per_task_train},
        tokens=token_stats(lengths),
        train_tokens_per_epoch=sum(len(e.input_ids) for e in train),
        answer_tokens_per_epoch=sum(sum(1 for x in e.labels if x != IGNORE) for e in train),
    )
    return PreparedData(train, validation, test, files, stats)
