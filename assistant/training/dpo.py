"""Preference tuning: a DPO adapter trained from people's votes, starting from an SFT adapter.

    feedback.db -> assistant feedback export -> pairs.jsonl {prompt, chosen, rejected, provenance}
                -> prompts rendered exactly as the SFT adapter is served (template, retrieval, examples)
                -> TRL DPOTrainer on the same base (NF4 or full), policy = a trainable copy of the SFT
                   adapter, reference = a frozen copy of it (TRL adds it as the adapter named "ref")
                -> adapters/<name>/: adapter, variant.yaml, card.yaml, README.md (written atomically)

The result is a variant like any other: the evaluation suite and the arena can compare it with the rest.
Its settings (``DpoSettings``) are in ``config.py``. (Imported only by the train verb: it loads
transformers and TRL at import.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from assistant.config import Variant, portable_variant
from assistant.data import DataError, jsonl_rows
from assistant.messages import message_problems
from assistant.settings_reader import ConfigError
from assistant.training.config import DpoSettings
from assistant.variants import load_variant


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """Preference pairs, every bad row reported with its line."""
    if not path.is_file():
        raise DataError(f"{path}: no such preference file (write one with `assistant feedback export`)")
    pairs, problems = [], []
    for where, _, row, problem in jsonl_rows(path):
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        wrong = message_problems(prompt, last="user", strict_order=False)
        if wrong:
            problems.append(f"{where}: 'prompt' must be text or a message list ending with the user's message: "
                            + "; ".join(wrong))
            continue
        chosen, rejected = row.get("chosen"), row.get("rejected")
        if not (isinstance(chosen, str) and chosen.strip() and isinstance(rejected, str) and rejected.strip()):
            problems.append(f"{where}: 'chosen' and 'rejected' must be non-empty text")
            continue
        if chosen.strip() == rejected.strip():
            problems.append(f"{where}: 'chosen' and 'rejected' are the same answer")
            continue
        pairs.append({"prompt": [m for m in prompt if m["role"] != "system"], "chosen": chosen,
                      "rejected": rejected, "where": where})
    if problems:
        raise DataError(f"{len(problems)} problem(s) in the preference pairs:\n  " + "\n  ".join(problems))
    if not pairs:
        raise DataError(f"{path}: no preference pairs")
    return pairs


def render_pairs(variant: Variant, pairs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Prompt text as served, and each answer as the chat template writes it after that prompt (with its
    end-of-turn marker, so the policy learns where to stop), exactly as SFT examples are encoded."""
    from assistant.generate import Bot

    bot = Bot(dataclasses.replace(variant, model=dataclasses.replace(variant.model, adapter=None)))
    rows = []
    for pair in pairs:
        prepared = bot.prepare(pair["prompt"])
        try:
            rows.append({"prompt": prepared.text, "chosen": bot.answer_text(prepared, pair["chosen"]),
                         "rejected": bot.answer_text(prepared, pair["rejected"])})
        except DataError as exc:
            raise DataError(f"{pair['where']}: {exc}") from None
    return rows


def train_dpo(settings: DpoSettings, overwrite: bool = False, quiet: bool = False) -> Path:
    """Trains and writes the DPO adapter; returns its folder.

    Args:
        settings: what to train (``load_dpo_settings`` reads them); relative paths resolve against its root.
        overwrite: replace an existing adapter of the same name (atomically, at the end).
        quiet: no progress bar.
    """
    import torch
    import yaml
    from datasets import Dataset
    from peft import PeftModel
    from trl import DPOConfig, DPOTrainer

    from assistant.artifacts import publish_atomically
    from assistant.models.loading import disable_cpu_4bit_repacking, load_base

    start = settings.resolve(settings.start_from)
    if not (start / "variant.yaml").is_file() or not (start / "adapter_config.json").is_file():
        raise ConfigError(f"{start}: not an adapter folder (needs adapter_config.json and variant.yaml)")
    destination = (settings.resolve(settings.output_dir) / settings.name).resolve()
    if destination.exists() and not overwrite:
        raise ConfigError(f"{destination} exists; choose another --name or pass --overwrite")
    variant = load_variant(start)
    pairs = read_pairs(settings.resolve(settings.pairs))
    rows = render_pairs(variant, pairs)

    m = variant.model
    quantization = settings.quantization or m.quantization
    base = load_base(m.base, quantization, m.dtype, m.device, m.trust_remote_code)
    if quantization == "nf4":
        disable_cpu_4bit_repacking(base.model)
    base.model.config.use_cache = False
    torch.manual_seed(settings.seed)
    model = PeftModel.from_pretrained(base.model, str(start), is_trainable=True)
    cuda = base.device.startswith("cuda")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dpo-") as scratch:  # save_strategy "no": the Trainer keeps nothing
        args = DPOConfig(
            output_dir=scratch,
            beta=settings.beta,
            num_train_epochs=settings.epochs,
            max_steps=settings.max_steps or -1,
            per_device_train_batch_size=settings.batch_size,
            gradient_accumulation_steps=settings.grad_accum,
            learning_rate=settings.learning_rate,
            max_length=settings.max_length,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=settings.seed,
            use_cpu=not cuda,
            bf16=cuda and base.dtype == torch.bfloat16,
            disable_tqdm=quiet,
        )
        trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=base.tokenizer)
        trainer.train()
    seconds = time.perf_counter() - started
    history = [h for h in trainer.state.log_history if "loss" in h]
    card = {
        "name": settings.name,
        "method": "dpo",
        "start_from": os.path.relpath(start, destination),
        "pairs": {"file": os.path.relpath(settings.resolve(settings.pairs), destination), "count": len(rows)},
        "settings": {**settings.hyperparameters(), "quantization": quantization},  # the base actually used
        "steps": trainer.state.global_step,
        "seconds": round(seconds, 1),
        "first": _metrics(history[0]) if history else {},
        "last": _metrics(history[-1]) if history else {},
    }

    def build(staging: Path) -> None:
        model.save_pretrained(str(staging), selected_adapters=["default"])  # the policy, not TRL's "ref" copy
        # the SFT variant's relative paths were relative to its folder; re-anchor them to the new one
        served = portable_variant(dataclasses.replace(variant, model=dataclasses.replace(variant.model, adapter=None)),
                                  destination)
        served["name"] = settings.name
        served["model"]["adapter"] = "."
        (staging / "variant.yaml").write_text(yaml.safe_dump(served, sort_keys=False), encoding="utf-8")
        (staging / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False), encoding="utf-8")
        with open(staging / "history.jsonl", "w", encoding="utf-8") as handle:
            for h in history:
                handle.write(json.dumps(h) + "\n")
        (staging / "README.md").write_text(_readme(card), encoding="utf-8")

    return publish_atomically(destination, build, replace=True)


def _metrics(entry: dict[str, Any]) -> dict[str, float]:
    keys = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")
    return {k: round(float(entry[k]), 4) for k in keys if k in entry and math.isfinite(float(entry[k]))}


def _readme(card: dict[str, Any]) -> str:
    first, last = card["first"], card["last"]
    lines = [f"# {card['name']}: a DPO adapter", "",
             f"Preference-tuned from the SFT adapter `{card['start_from']}` on {card['pairs']['count']} pairs "
             f"(`{card['pairs']['file']}`), beta {card['settings']['beta']}, {card['steps']} steps, "
             f"{card['seconds']} s.", "", "| | first step | last step |", "|---|---:|---:|"]
    for key in ("loss", "rewards/accuracies", "rewards/margins"):
        lines.append(f"| {key} | {first.get(key, 'n/a')} | {last.get(key, 'n/a')} |")
    lines += ["", "Serve or evaluate it like any variant: `variant.yaml` in this folder."]
    return "\n".join(lines) + "\n"
