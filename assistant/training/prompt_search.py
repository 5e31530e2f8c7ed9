"""Prompt search: the best prompt a variant can have, found as an adapter's hyperparameters are, so that
"prompt or adapter?" compares a tuned prompt with a tuned adapter.

    assistant tune-prompt configs/sentiment-prompt-search.yaml     # -> prompts/tuned/<name>/

The search space is a variant's prompt: the instruction (candidates written in the config, plus rewordings
the base model itself proposes, OPRO-style), how many few-shot examples, how they are chosen (the first ones,
balanced over the answers, or dynamic: the most similar training examples for each request), and, for
variants with documents, retrieval's ``top_k`` and retriever. Each trial answers a development split cut
from the training data: the evaluation suite's cases are never read, and rows whose question is in a
``held_out`` file are dropped first. Trials are sampled by Optuna's TPE (or grid, or random), and the median
pruner stops a trial whose score on the first parts of the development split falls behind the others'.

The result is a folder like an adapter's: ``variant.yaml`` (the best prompt, served and evaluated as any
variant), ``examples.jsonl`` (the pool few-shot examples come from: the training rows not in the
development split), ``card.yaml`` (the search, every trial and its development score), ``search.csv`` and
``search.png``.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from assistant.artifacts import file_sha256, publish_atomically
from assistant.config import portable_variant
from assistant.data import DataError, example_messages, read_jsonl
from assistant.settings_reader import ConfigError, FileSettings, apply_overrides, build_settings, read_settings_file
from assistant.variants import load_variant

LABEL_METRICS = ("macro_f1", "accuracy")
SEARCHABLE = ("prompt.few_shot_count", "prompt.few_shot_selection", "context.top_k", "context.retriever",
              "context.chunk_words")


@dataclass
class PromptSearchConfig(FileSettings):
    name: str = "best-prompt"
    """The result's name: it is written to <output_dir>/<name>/."""
    variant: str = ""
    """The prompt-only variant whose prompt is searched (its base, template and generation settings stay)."""
    data: str = ""
    """Training rows in any documented format: the development split is cut from them, and the rest are the
    examples few-shot prompts draw on."""
    held_out: str | None = None
    """Evaluation cases (the suite's): training rows whose question is among them are dropped, so that
    neither the development split nor the examples hold a case the suite will score."""
    dev_size: int = 100
    """Rows in the development split (a seeded random sample); every trial is scored on them."""
    metric: str = ""
    """Development score to maximise: a metric of eval/metrics (macro_f1, accuracy, rouge_l, key_facts, ...).
    Default: macro_f1 when the rows have labels, else rouge_l."""
    labels: list[str] = field(default_factory=list)
    """For macro_f1 and accuracy: the labels (default: those of the rows)."""
    search: Literal["tpe", "grid", "random"] = "tpe"
    """'tpe': Optuna's tree-structured Parzen estimator; 'grid': every combination; 'random'."""
    trials: int = 12
    """Trials to run (grid: at most the grid's size)."""
    prune_parts: int = 4
    """The development split is answered in this many parts; after each, a trial behind the median of the
    others at the same part is stopped (Optuna's median pruner)."""
    instruction_variable: str = "instruction"
    """The template variable that holds the instruction (prompt.variables.<this>)."""
    instructions: list[str] = field(default_factory=list)
    """Instruction candidates; default: the variant's own."""
    paraphrases: int = 0
    """Rewordings of the first instruction that the base model itself proposes (sampled, seeded), added as
    candidates. For label tasks a rewording must keep every label word, or it is left out."""
    space: dict[str, list[Any]] = field(default_factory=dict)
    """Setting -> values to try, among prompt.few_shot_count, prompt.few_shot_selection, context.top_k,
    context.retriever and context.chunk_words."""
    output_dir: str = "prompts/tuned"
    """Folder that receives <name>/."""
    seed: int = 0
    """Seed of the split, the sampler and the rewordings."""
    root: str = "."

    def resolve(self, value: str) -> Path:
        return (Path(self.root) / Path(value).expanduser()).resolve()


def load_prompt_search(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PromptSearchConfig:
    """Reads a prompt search file and applies KEY=VALUE overrides; every problem reported at once."""
    path = Path(path)
    data = apply_overrides(read_settings_file(path, "prompt search config"), list(overrides))
    errors: list[str] = []
    data.pop("root", None)
    config = build_settings(PromptSearchConfig, data, "", errors)
    config.root = str(path.parent.resolve())
    if not errors:
        for key, label in (("variant", "variant file"), ("data", "training rows")):
            if not getattr(config, key):
                errors.append(f"{key}: the {label} is needed")
            elif not config.resolve(getattr(config, key)).is_file():
                errors.append(f"{key}: {config.resolve(getattr(config, key))} does not exist")
        if config.held_out and not config.resolve(config.held_out).is_file():
            errors.append(f"held_out: {config.resolve(config.held_out)} does not exist")
        for key, values in config.space.items():
            if key not in SEARCHABLE:
                errors.append(f"space.{key}: not searchable here (searchable: {', '.join(SEARCHABLE)})")
            elif not isinstance(values, list) or not values:
                errors.append(f"space.{key}: a non-empty list of values to try")
        for key in ("dev_size", "trials", "prune_parts"):
            if getattr(config, key) < 1:
                errors.append(f"{key}: must be at least 1")
        if config.paraphrases < 0:
            errors.append("paraphrases: must be 0 or more")
    if errors:
        raise ConfigError(f"{path}: {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    return config


def optuna_sampler(method: str, grid: dict[str, list] | None, seed: int):
    """The Optuna sampler for a search method: 'tpe', 'random', or 'grid' over ``grid``."""
    import optuna

    if method == "grid":
        return optuna.samplers.GridSampler(grid or {}, seed=seed)
    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)


@dataclass
class Split:
    dev: list[tuple[list[dict[str, str]], str]]
    """(conversation up to the user's turn, reference answer)."""
    pool: list[list[dict[str, str]]]
    """The example conversations few-shot prompts draw on."""
    dropped: int
    """Rows left out because their question is a held-out case."""


def split_rows(config: PromptSearchConfig) -> Split:
    """The development split and the example pool, from the training rows (seeded)."""
    from assistant.data import eval_questions, format_problems, normalise_text

    records, problems = read_jsonl(config.resolve(config.data))
    held = {normalise_text(q) for _, q in eval_questions(config.resolve(config.held_out))} if config.held_out else set()
    examples, dropped = [], 0
    for record in records:
        messages, problem = example_messages(record)
        if problem:
            problems.append(f"{record.where}: not a complete example ({problem})")
        elif any(normalise_text(m["content"]) in held for m in messages if m["role"] == "user"):
            dropped += 1
        else:
            examples.append(messages)
    if problems:
        raise DataError(format_problems(problems))
    random.Random(config.seed).shuffle(examples)
    if len(examples) <= config.dev_size:
        raise ConfigError(f"dev_size: {config.dev_size} is not below the {len(examples)} usable rows of {config.data}")
    dev = [(ex[:-1], ex[-1]["content"]) for ex in examples[: config.dev_size]]
    return Split(dev, examples[config.dev_size:], dropped)


def dev_score(metric: str, answers: list[str], references: list[str], labels: list[str]) -> float:
    """The development score of a list of answers (the metric modules of eval/metrics)."""
    from assistant.evaluation.scoring import extract_label
    from assistant.metrics import load_metric

    module = load_metric(metric)
    if metric in LABEL_METRICS:
        predicted = [extract_label(a, labels) for a in answers]
        extra = {"labels": labels} if metric == "macro_f1" else {}
        return float(module.compute(predictions=predicted, references=references, **extra)[metric])
    return float(module.compute(predictions=answers, references=references)[metric])


PARAPHRASE_REQUEST = ("Rewrite this instruction for an AI assistant in other words. Keep its meaning, and keep "
                      "any list of allowed answers exactly as it is. Reply with the new instruction only.\n\n"
                      "Instruction: {instruction}")


def propose_paraphrases(variant, instruction: str, count: int, labels: list[str], seed: int,
                        engine: str | None) -> tuple[list[str], list[str]]:
    """OPRO-style candidates: rewordings of ``instruction`` sampled from the variant's own base model. Returns
    (kept, rejected): a rewording is rejected when empty, a repeat, or missing a label word."""
    from assistant.generate import Bot

    writer = Bot(load_variant(None, [f"model.base={variant.model.base}", f"model.quantization={variant.model.quantization}",
                                     "prompt.template=plain.j2", "generation.max_new_tokens=80"]), engine)
    kept, rejected = [], []
    for k in range(count):
        sampling = writer.sampling(temperature=0.9, top_p=0.95, seed=seed + k + 1)
        text = writer.reply([{"role": "user", "content": PARAPHRASE_REQUEST.format(instruction=instruction)}],
                            sampling).text.strip().strip('"').strip()
        text = text.removeprefix("Instruction:").strip()
        missing = [label for label in labels if label.lower() not in text.lower()]
        if not text or text in kept or text == instruction or missing:
            rejected.append(text)
        else:
            kept.append(text)
    return kept, rejected


def tune_prompt(config: PromptSearchConfig, engine: str | None = None, overwrite: bool = False,
                quiet: bool = False) -> Path:
    """Runs the search and writes the best prompt's folder; returns it."""
    import optuna
    import yaml
    from tqdm.auto import tqdm

    from assistant.generate import Bot

    started = time.perf_counter()
    destination = config.resolve(config.output_dir) / config.name
    if destination.exists() and not overwrite:
        raise ConfigError(f"{destination} exists; remove it, choose another name, or pass --overwrite")
    base = load_variant(config.resolve(config.variant))
    split = split_rows(config)
    references = [answer for _, answer in split.dev]
    labels = config.labels or sorted(set(references))
    metric = config.metric or ("macro_f1" if len(set(references)) <= 20 else "rouge_l")
    first = config.instructions or [str(base.prompt.variables.get(config.instruction_variable, ""))]
    if not first[0]:
        raise ConfigError(f"instructions: none given, and the variant has no prompt.variables.{config.instruction_variable}")
    paraphrased, rejected = propose_paraphrases(base, first[0], config.paraphrases,
                                                labels if metric in LABEL_METRICS else [], config.seed, engine) \
        if config.paraphrases else ([], [])
    candidates = list(dict.fromkeys(first + paraphrased))

    def build(staging: Path) -> None:
        pool_file = staging / "examples.jsonl"
        pool_file.write_text("".join(json.dumps({"messages": ex}, ensure_ascii=False) + "\n" for ex in split.pool),
                             encoding="utf-8")
        space = {"instruction": list(range(len(candidates))), **config.space}
        grid = space if config.search == "grid" else None
        trials = min(config.trials, math.prod(len(v) for v in space.values())) if grid else config.trials
        study = optuna.create_study(direction="maximize", sampler=optuna_sampler(config.search, grid, config.seed),
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        rows: list[dict[str, Any]] = []
        parts = [split.dev[i::config.prune_parts] for i in range(config.prune_parts)]

        def trial_variant(params: dict[str, Any], examples: Path = pool_file):
            settings = {f"prompt.variables.{config.instruction_variable}": candidates[params["instruction"]],
                        "prompt.few_shot": str(examples),
                        **{k: v for k, v in params.items() if k != "instruction"}}
            if not settings.get("prompt.few_shot_count", base.prompt.few_shot_count):
                settings["prompt.few_shot"] = None
            return load_variant(config.resolve(config.variant), settings, name=config.name)

        def objective(trial) -> float:
            params = {key: trial.suggest_categorical(key, values) for key, values in space.items()}
            bot = Bot(trial_variant(params), engine)
            row = {"trial": trial.number, **params, "state": "running"}
            rows.append(row)
            answers: list[str] = []
            golds: list[str] = []
            began = time.perf_counter()
            for step, part in enumerate(parts):
                answers += [r.text for r in bot.reply_batch([history for history, _ in part], batch_size=8)]
                golds += [answer for _, answer in part]
                score = dev_score(metric, answers, golds, labels)
                trial.report(score, step)
                if step < len(parts) - 1 and trial.should_prune():
                    row.update(state="pruned", score=score, answered=len(answers), seconds=time.perf_counter() - began)
                    raise optuna.TrialPruned()
            row.update(state="complete", score=score, answered=len(answers), seconds=time.perf_counter() - began)
            return score

        with tqdm(total=trials, desc="prompt search", unit="trial", disable=quiet) as bar:
            study.optimize(objective, n_trials=trials, callbacks=[lambda study, trial: bar.update(1)])
        best = study.best_trial
        variant = trial_variant(best.params, destination / "examples.jsonl")  # where the file will be
        (staging / "variant.yaml").write_text(
            f"# The best prompt of a search ({config.search}, {len(rows)} trials); see card.yaml.\n"
            + yaml.safe_dump({**portable_variant(variant, destination), "name": config.name}, sort_keys=False,
                             allow_unicode=True), encoding="utf-8")
        card = {
            "name": config.name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "variant": config.variant, "base_model": base.model.base,
            "data": {"file": config.data, "sha256": file_sha256(config.resolve(config.data)),
                     "dev": len(split.dev), "pool": len(split.pool), "dropped_as_held_out": split.dropped,
                     "held_out": config.held_out},
            "metric": metric, "labels": labels if metric in LABEL_METRICS else None,
            "search": {"method": config.search, "trials": len(rows), "prune_parts": config.prune_parts,
                       "space": {k: v for k, v in space.items() if k != "instruction"}, "seed": config.seed},
            "instructions": {"candidates": candidates, "from_config": len(first), "paraphrased": paraphrased,
                             "rejected_paraphrases": rejected},
            "best": {"trial": best.number, "dev_score": round(best.value, 4),
                     "instruction": candidates[best.params["instruction"]],
                     **{k: v for k, v in best.params.items() if k != "instruction"}},
            "trials": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()} for row in rows],
            "seconds": round(time.perf_counter() - started, 1),
        }
        (staging / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=110),
                                           encoding="utf-8")
        _write_trials(rows, metric, best.number, staging)

    return publish_atomically(destination, build, replace=overwrite)


def _write_trials(rows: list[dict[str, Any]], metric: str, best: int, folder: Path) -> None:
    """search.csv and search.png: every trial's development score in order, pruned ones marked, and the best
    score so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(folder / "search.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    best_so_far, running = [], -math.inf
    for row in rows:
        if row.get("state") == "complete":
            running = max(running, row["score"])
        best_so_far.append(running if math.isfinite(running) else None)
    for row in rows:
        colour = "tab:green" if row["trial"] == best else ("tab:gray" if row["state"] == "complete" else "tab:orange")
        ax.scatter(row["trial"], row.get("score", math.nan), color=colour, marker="o" if row["state"] == "complete" else "x")
    ax.plot([r["trial"] for r in rows], best_so_far, color="tab:green", lw=1, label="best so far")
    ax.set_xlabel("trial (x: pruned, scored on the part answered)")
    ax.set_ylabel(f"development {metric}")
    ax.set_title("prompt search")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "search.png", dpi=110)
    plt.close(fig)


def describe(folder: Path) -> str:
    """One line on a finished search, for the command line."""
    import yaml

    card = yaml.safe_load((folder / "card.yaml").read_text(encoding="utf-8"))
    best = card["best"]
    return (f"best of {card['search']['trials']} trials: development {card['metric']} {best['dev_score']} "
            f"(trial {best['trial']}), in {card['seconds'] / 60:.1f} minutes -> {folder / 'variant.yaml'}")

