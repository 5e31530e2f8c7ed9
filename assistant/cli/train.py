"""The training verbs: ``train`` (supervised fine-tuning, or DPO with ``--method dpo``), ``sweep``,
``tune-prompt`` (the prompt's own search), ``train-retriever`` (an embedder or reranker trained on the domain)
and ``data check``. Settings come from a YAML file, then ``--set KEY=VALUE`` and ``--KEY VALUE`` overrides on the
command line; each verb is a thin function over the library, and the parser that calls them is in ``parser.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from assistant.data import DataError
from assistant.settings_reader import ConfigError
from assistant.training.config import load_dpo_settings, load_retriever_config, load_train_config

DPO_SHORTCUTS: dict[str, tuple[str, type, str]] = {
    "start_from": ("--from", str, "ADAPTER"),
    "pairs": ("--pairs", str, "FILE"),
    "output_dir": ("--output-dir", str, "DIR"),
    "beta": ("--beta", float, "BETA"),
    "epochs": ("--epochs", float, "N"),
    "max_steps": ("--max-steps", int, "N"),
    "batch_size": ("--batch-size", int, "N"),
    "grad_accum": ("--grad-accum", int, "N"),
    "learning_rate": ("--learning-rate", float, "LR"),
    "max_length": ("--max-length", int, "TOKENS"),
    "seed": ("--seed", int, "N"),
}
"""Options of `train --method dpo` that stand for a --set of one DPO setting: setting -> (option, type,
metavar). Paths given this way are relative to the working directory, like any path on a command line."""

PATH_SHORTCUTS = ("start_from", "pairs", "output_dir")


def add_dpo_shortcuts(group) -> None:
    """Adds the DPO_SHORTCUTS options to an argument group, each stored as ``dpo_<setting>`` (None when not
    given)."""
    for key, (option, kind, metavar) in DPO_SHORTCUTS.items():
        group.add_argument(option, dest=f"dpo_{key}", type=kind, metavar=metavar, help=f"same as --set {key}=...")


def dotted_overrides(extra: list[str]) -> list[str]:
    """Turns ['--training.learning_rate', '1e-4', '--name=x'] into ['training.learning_rate=1e-4', 'name=x']."""
    overrides, i = [], 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--"):
            raise ConfigError(f"unexpected argument {item!r}: settings are given as --section.key value")
        if "=" in item:
            overrides.append(item[2:])
            i += 1
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            overrides.append(f"{item[2:]}={extra[i + 1]}")
            i += 2
        else:
            raise ConfigError(f"{item}: missing its value (or give it as --set {item[2:]}=VALUE)")
    return overrides


def setting_overrides(args: argparse.Namespace) -> list[str]:
    """Every KEY=VALUE override of the command line: --set ones, then --section.key value ones."""
    return list(args.overrides) + dotted_overrides(args.extra)


def cmd_train(args: argparse.Namespace) -> int:
    if args.method == "dpo":
        return cmd_train_dpo(args)
    given = [option for key, (option, _, _) in DPO_SHORTCUTS.items() if getattr(args, f"dpo_{key}") is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: only with --method dpo (a training config's settings are "
                          "overridden with --set KEY=VALUE or --section.key VALUE)")
    if not args.config:
        raise ConfigError("train: give a training config (see configs/tidewater-train.yaml), or --method dpo")
    from assistant.training.sft import TrainingInterrupted, train

    overrides = setting_overrides(args) + ([f"name={json.dumps(args.name)}"] if args.name else [])
    config = load_train_config(args.config, overrides)
    try:
        folder = train(config, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    if folder is not None:  # None: another process of a multi-process run
        import yaml

        from assistant.training.card import loss_table

        print(f"adapter written to {folder}\n\nloss on answer tokens (lower is better):")
        print(loss_table(yaml.safe_load((folder / "card.yaml").read_text())))
    return 0


def cmd_train_dpo(args: argparse.Namespace) -> int:
    overrides = setting_overrides(args)
    for key in DPO_SHORTCUTS:
        value = getattr(args, f"dpo_{key}")
        if value is not None:
            value = str(Path(value).expanduser().resolve()) if key in PATH_SHORTCUTS else value
            overrides.append(f"{key}={json.dumps(value)}")
    if args.name:
        overrides.append(f"name={json.dumps(args.name)}")
    settings = load_dpo_settings(args.config, overrides)
    from assistant.training.dpo import train_dpo

    folder = train_dpo(settings, overwrite=args.overwrite, quiet=args.quiet)
    print(f"adapter written to {folder}\n")
    print((folder / "README.md").read_text())
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from assistant.training.search import sweep

    folder = sweep(Path(args.config), setting_overrides(args), args.search, args.trials, quiet=args.quiet)
    print(f"best adapter written to {folder}\n")
    print((folder / "sweep.md").read_text())
    return 0


def cmd_tune_prompt(args: argparse.Namespace) -> int:
    """Search a prompt-only variant's prompt space (instruction candidates and the base model's own
    rewordings, few-shot count and selection, retrieval) on a development split cut from the training
    data, never the evaluation cases; write the best prompt as a variant folder with its search card and
    plot (prompts/tuned/<name>/)."""
    from assistant.training.prompt_search import describe, load_prompt_search, tune_prompt

    overrides = setting_overrides(args)
    if args.trials:
        overrides.append(f"trials={args.trials}")
    if args.search:
        overrides.append(f"search={args.search}")
    folder = tune_prompt(load_prompt_search(args.config, overrides), args.engine, args.overwrite, args.quiet)
    print(describe(folder))
    return 0


def cmd_train_retriever(args: argparse.Namespace) -> int:
    """Fine-tune the sentence-embedding model of dense retrieval (kind bi-encoder) or a reranker (kind
    cross-encoder) on the domain: pairs of a question and the passage of its source document that best
    matches the answer, with BM25 hard negatives from other documents, from labelled conversations (train)
    or from questions a base model drafts per passage (synthetic). The folder written holds the model, a card
    with document-level hit@1/3/5 and MRR on held-out conversations before and after training, and a
    README. The evaluation cases are never read."""
    from assistant.training.retriever import metrics_table, train_retriever

    config = load_retriever_config(args.config, setting_overrides(args))
    folder = train_retriever(config, overwrite=args.overwrite, quiet=args.quiet)
    card = json.loads((folder / "retriever-card.json").read_text(encoding="utf-8"))
    print(f"{card['kind']} written to {folder} ({card['data']['pairs']['kept']} pairs, "
          f"{card['training']['seconds']} s of training)\n\n"
          f"held-out questions ({card['metrics']['held_out_questions']}), document level:")
    print(metrics_table(card))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from assistant.data import (
        check_records,
        describe_labels,
        eval_questions,
        format_problems,
        label_counts,
        read_jsonl,
        token_stats,
    )

    if args.config:
        return _check_with_config(args)
    if not args.files:
        raise ConfigError("data check: name JSONL files, or a training config with --config")
    problems: list[str] = []
    records = []
    for path in args.files:
        found, read_problems = read_jsonl(Path(path))
        records += found
        problems += read_problems
    leak = []
    for path in args.eval or []:
        leak += eval_questions(Path(path))
    from assistant.models.loading import shared_tokenizer

    tokenizer = shared_tokenizer(args.base)[0]

    def count(record) -> int:
        messages = [m for m in record.messages if m["role"] in ("system", "user", "assistant")]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    problems += check_records(records, need_answer=True, count_tokens=count, max_tokens=args.max_tokens,
                              eval_questions=leak)
    if problems:
        print(format_problems(problems), file=sys.stderr)
        return 1
    for field, counts in label_counts(records).items():
        print("\n".join(describe_labels(field, counts)))
    stats = token_stats([count(r) for r in records])
    print(f"{len(records)} rows, no problems. Tokens per row (base tokenizer, chat template, no prompt "
          f"template): mean {stats['mean']:.0f}, median {stats['median']}, p95 {stats['p95']}, max {stats['max']}, "
          f"total {stats['total']}")
    return 0


def _check_with_config(args: argparse.Namespace) -> int:
    from assistant.data import describe_labels, label_counts, read_jsonl
    from assistant.training.data import prepare_data, serving_variant
    from assistant.training.sft import estimate, measure_steps

    config = load_train_config(args.config, setting_overrides(args))
    variant = serving_variant(config)
    try:
        data = prepare_data(config, variant)
    except DataError as exc:
        print(f"{exc}", file=sys.stderr)
        return 1
    stats = data.stats
    tokens = stats.tokens
    print(f"no problems. Examples rendered with template {variant.prompt.template} as served:")
    for name in stats.examples:
        print(f"  {name}: {stats.examples[name]} train, {stats.validation[name]} validation, "
              f"{stats.mixture[name]} per epoch in the mixture")
    print(f"tokens per example: mean {tokens['mean']:.0f}, median {tokens['median']}, p95 {tokens['p95']}, "
          f"max {tokens['max']}; answer tokens per epoch {stats.answer_tokens_per_epoch} of "
          f"{stats.train_tokens_per_epoch}")
    for task in config.tasks:
        if task.kind == "label":
            counts = label_counts(read_jsonl(config.resolve(task.file))[0], task.label_field)
            for line in describe_labels(f"task {task.name} ({task.label_field})", counts.get(task.label_field, {})):
                print(line + (" (balanced in training: balance is on)" if task.balance and line.startswith("  warning")
                              else ""))
    measured = None if args.no_measure else measure_steps(config, variant, data)
    print("pre-flight: " + estimate(config, data, measured).describe())
    return 0
