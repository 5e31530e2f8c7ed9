"""Self-describing adapter folders.

    adapters/<name>/
      adapter_model.safetensors, adapter_config.json   the PEFT adapter (plain PeftModel.from_pretrained loads it)
      variant.yaml     the variant that serves it: `assistant chat --variant adapters/<name>/variant.yaml`
      card.yaml        base model id and weight hash, template name and hash, data hashes and counts,
                       every hyperparameter, final metrics, wall time, package versions
      README.md        the same, for people
      loss.csv, loss.png   training and validation loss per step
      tensorboard/     the run's TensorBoard logs

The folder is written to a temporary sibling and renamed into place, so a crash never leaves half an adapter.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any


def package_versions() -> dict[str, str]:
    names = ["torch", "transformers", "peft", "bitsandbytes", "accelerate", "assistant"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def loss_rows(history: list[dict[str, Any]], base_metrics: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Per-step training and validation losses from the Trainer's log history, with the base model's
    validation losses (measured before training) as step 0."""
    rows: dict[int, dict[str, Any]] = {}
    if base_metrics:
        rows[0] = {"step": 0, **{k: v for k, v in base_metrics.items() if k.startswith("eval_") and k.endswith("_loss")}}
    for entry in history:
        step = entry.get("step")
        if step is None:
            continue
        row = rows.setdefault(step, {"step": step})
        for key, value in entry.items():
            if key == "loss" or key == "learning_rate" or (key.startswith("eval_") and key.endswith("_loss")):
                row[key] = value
    return [rows[s] for s in sorted(rows)]


def plot_losses(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for r in rows for k in r if k.endswith("loss")})
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot(*zip(*points), marker="o" if key != "loss" else None, markersize=3,
                label="train" if key == "loss" else key.removeprefix("eval_").replace("_loss", " (validation)"))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_adapter(destination: Path, *, model, base, config, variant, data, history, metrics, wall_seconds,
                  steps, tokens_seen, tensorboard: Path, best_checkpoint, resumed_from=None, processes=1) -> Path:
    """Writes the adapter folder atomically (see the module docstring). Returns ``destination``."""
    import yaml

    from assistant.artifacts import publish_atomically, weights_fingerprint
    from assistant.config import portable_variant
    from assistant.generate import Bot

    def build(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        # peft records where the base was loaded from (a cache path on this machine); name it as the variant does
        config_path = staging / "adapter_config.json"
        adapter_config = json.loads(config_path.read_text())
        adapter_config["base_model_name_or_path"] = variant.model.base
        config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True))
        template = Bot(variant).template
        # paths in the variant file are relative to it; keep them valid from the adapter's folder
        served = portable_variant(variant, destination)
        served["model"]["adapter"] = "."
        served["name"] = config.name
        (staging / "variant.yaml").write_text(yaml.safe_dump(served, sort_keys=False))

        rows = loss_rows(history, metrics.get("base"))
        keys = ["step"] + sorted({k for r in rows for k in r if k != "step"})
        with open(staging / "loss.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        if rows:
            plot_losses(rows, staging / "loss.png", f"{config.name}: loss per step")
        if tensorboard.is_dir():
            shutil.copytree(tensorboard, staging / "tensorboard")

        card = {
            "name": config.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "base_model": {"id": variant.model.base, "location_sha256": weights_fingerprint(base.source.location),
                           "quantization": variant.model.quantization, "dtype": str(base.dtype).replace("torch.", ""),
                           "device": base.device},
            "prompt_template": {"name": template.name, "sha256": template.content_hash},
            "variant_hash_without_adapter": variant.variant_hash(),
            "data": {"files": {os.path.relpath(name, destination): info for name, info in data.files.items()},
                     **data.stats.to_dict()},
            # where the run wrote its files is not how it trained (and would name this machine's folders)
            "hyperparameters": {k: v for k, v in config.to_dict().items() if k not in ("output_dir", "runs_dir")},
            "metrics": _round(metrics),
            "training": {"steps": steps, "tokens_seen": int(tokens_seen or 0), "wall_seconds": round(wall_seconds, 1),
                         "best_checkpoint_step": int(best_checkpoint.rsplit("-", 1)[1]) if best_checkpoint else None,
                         "resumed_from_step": resumed_from, "processes": processes},
            "packages": package_versions(),
        }
        (staging / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
        (staging / "README.md").write_text(_readme(card))

    # --overwrite: an existing folder is swapped for the new one only once the new one is complete
    return publish_atomically(destination, build, replace=True)


def _round(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


def loss_table(card: dict[str, Any]) -> str:
    """Markdown table of validation and test losses, base model against adapter."""
    base, adapter = card["metrics"]["base"], card["metrics"]["adapter"]
    losses = sorted(k for k in adapter if k.endswith("_loss") and k.split("_")[0] in ("eval", "test"))
    rows = [f"| {k} | {base.get(k, float('nan')):.4f} | {adapter[k]:.4f} |" for k in losses]
    return "\n".join(["| split | base model | adapter |", "|---|---:|---:|", *rows])


def _readme(card: dict[str, Any]) -> str:
    table = loss_table(card)
    h = card["hyperparameters"]
    return f"""# Adapter `{card['name']}`

LoRA adapter for `{card['base_model']['id']}` ({card['base_model']['quantization']} base), trained with the
prompt template `{card['prompt_template']['name']}` ({card['prompt_template']['sha256']}).

Serve it: `assistant chat --variant variant.yaml` (from this folder) or
`python app.py --variant <this folder>/variant.yaml`. Plain PEFT loads it too:
`PeftModel.from_pretrained(base_model, "<this folder>")`.

## Loss on answer tokens (lower is better)

{table}

![loss per step](loss.png)

## Training

- tasks: {", ".join(f"{t['name']} ({t['kind']}, weight {t['weight']})" for t in h['tasks'])}
- LoRA r={h['lora']['r']}, alpha={h['lora']['alpha']}, dropout={h['lora']['dropout']}, modules {", ".join(h['lora']['target_modules'])}, last layers {h['lora']['last_layers'] or 'all'}
- learning rate {h['training']['learning_rate']} ({h['training']['lr_schedule']}, warmup {h['training']['warmup_ratio']}), weight decay {h['training']['weight_decay']}, batch {h['training']['batch_size']} x {h['training']['grad_accum']}
- {card['training']['steps']} steps, {card['training']['tokens_seen']} tokens, {card['training']['wall_seconds']} s, best checkpoint at step {card['training']['best_checkpoint_step']}

Everything else (data hashes and counts, package versions) is in `card.yaml`.
"""
