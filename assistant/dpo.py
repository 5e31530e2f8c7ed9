"""Preference tuning: a DPO adapter trained from people's votes, starting from an SFT adapter.

    feedback.db -> assistant feedback export -> pairs.jsonl {prompt, chosen, rejected, provenance}
                -> prompts rendered exactly as the SFT adapter is served (template, retrieval, examples)
                -> TRL DPOTrainer on the same base (NF4 or full), policy = a trainable copy of the SFT
                   adapter, reference = a frozen copy of it (TRL adds it as the adapter named "ref")
                -> adapters/<name>/: adapter, variant.yaml, card.yaml, README.md (written atomically)

The result is a variant like any other: the evaluation suite and the arena can compare it with the rest.
(Imported only by the train verb: it loads transformers and TRL at import.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.config import ConfigError, Variant, load_variant, portable_variant
from assistant.data import DataError, jsonl_rows


@dataclass
class DpoSettings:
    start_from: str
    """Folder of the SFT adapter to start from (its variant.yaml says how it is served)."""
    pairs: str
    """JSONL of preference pairs: {prompt (message list or text), chosen, rejected}."""
    name: str = "dpo"
    output_dir: str = "adapters"
    beta: float = 0.1
    """Strength of the pull towards the reference (the SFT adapter): lower lets the policy move further."""
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 2
    grad_accum: int = 1
    learning_rate: float = 5e-5
    max_length: int = 1024
    seed: int = 0


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
        if not (isinstance(prompt, list) and prompt and all(isinstance(m, dict) and m.get("role") in
                ("system", "user", "assistant") and isinstance(m.get("content"), str) for m in prompt)
                and prompt[-1]["role"] == "user"):
            problems.append(f"{where}: 'prompt' must be text or a message list ending with the user's message")
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
    from assistant.train import answer_text

    bot = Bot(dataclasses.replace(variant, model=dataclasses.replace(variant.model, adapter=None)))
    rows = []
    for pair in pairs:
        prepared = bot.prepare(pair["prompt"])
        try:
            rows.append({"prompt": prepared.text, "chosen": answer_text(bot, prepared, pair["chosen"]),
                         "rejected": answer_text(bot, prepared, pair["rejected"])})
        except DataError as exc:
            raise DataError(f"{pair['where']}: {exc}") from None
    return rows


def train_dpo(settings: DpoSettings, root: Path = Path("."), overwrite: bool = False, quiet: bool = False) -> Path:
    """Trains and writes the DPO adapter; returns its folder."""
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from trl import DPOConfig, DPOTrainer

    import yaml

    from assistant.models import disable_cpu_4bit_repacking, load_base, publish_atomically

    start = (root / settings.start_from).resolve()
    if not (start / "variant.yaml").is_file() or not (start / "adapter_config.json").is_file():
        raise ConfigError(f"{start}: not an adapter folder (needs adapter_config.json and variant.yaml)")
    destination = (root / settings.output_dir / settings.name).resolve()
    if destination.exists() and not overwrite:
        raise ConfigError(f"{destination} exists; choose another --name or pass --overwrite")
    variant = load_variant(start / "variant.yaml")
    pairs = read_pairs((root / settings.pairs).resolve())
    rows = render_pairs(variant, pairs)

    m = variant.model
    base = load_base(m.base, m.quantization, m.dtype, m.device, m.trust_remote_code)
    if m.quantization == "nf4":
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
    hyperparameters = {k: v for k, v in dataclasses.asdict(settings).items()
                       if k not in ("start_from", "pairs", "name", "output_dir")}
    card = {
        "name": settings.name,
        "method": "dpo",
        "start_from": os.path.relpath(start, destination),
        "pairs": {"file": os.path.relpath((root / settings.pairs).resolve(), destination), "count": len(rows)},
        "settings": hyperparameters,
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
