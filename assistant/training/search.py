"""Hyperparameter search over a training config: grid, random, or TPE (tree-structured Parzen estimator), with
Optuna.

The config's ``search`` section maps a setting to a range:

    search:
      training.learning_rate: loguniform 1e-5 1e-3     # random search: sampled on a log scale
      lora.dropout: uniform 0.0 0.2
      lora.r: choice 4 8 16                            # grid search needs 'choice' for every setting
      lora.last_layers: int 10 30

Each trial trains a full adapter; Optuna's median pruner stops a trial whose validation loss is worse than
the median of earlier trials at the same step. The best trial's adapter becomes ``adapters/<name>/``
(with the trials table and plot inside), the others are removed.
"""

from __future__ import annotations

import csv
import itertools
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from assistant.settings_reader import ConfigError, apply_overrides
from assistant.training.config import TrainConfig, load_train_config
from assistant.training.prompt_search import optuna_sampler
from assistant.training.sft import run_dir, train

KINDS = {"uniform": 2, "loguniform": 2, "int": 2, "choice": None}


def parse_space(search: dict[str, str]) -> dict[str, tuple[str, list]]:
    """{'training.learning_rate': 'loguniform 1e-5 1e-3'} -> {'training.learning_rate': ('loguniform', [1e-5, 1e-3])}."""
    import yaml

    space, problems = {}, []
    for key, spec in search.items():
        words = str(spec).split()
        kind = words[0] if words else ""
        values = [yaml.safe_load(w) for w in words[1:]]
        if kind not in KINDS:
            problems.append(f"search.{key}: {spec!r} must start with one of {', '.join(KINDS)}")
        elif KINDS[kind] and len(values) != KINDS[kind]:
            problems.append(f"search.{key}: {kind} takes a low and a high value")
        elif kind == "choice" and not values:
            problems.append(f"search.{key}: choice needs at least one value")
        else:
            if kind in ("uniform", "loguniform"):
                values = [float(v) for v in values]
            space[key] = (kind, values)
    if not search:
        problems.append("search: the config declares no ranges to search")
    if problems:
        raise ConfigError("sweep: " + "; ".join(problems))
    return space


class PruneOnValidation(TrainerCallback):
    """Reports the primary validation loss to Optuna at each evaluation and stops poor trials."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric
        self.reported: set[int] = set()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        import optuna

        # The final evaluation after training repeats the last step's; report each step once.
        step = state.global_step
        if metrics and self.metric in metrics and step > 0 and step not in self.reported:
            self.reported.add(step)
            self.trial.report(metrics[self.metric], step)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"{self.metric} {metrics[self.metric]:.4f} at step {step}")


def sweep(config_path: Path, overrides: list[str], method: str, trials: int | None, quiet: bool = False) -> Path:
    """Runs the search and returns the best adapter's folder."""
    import optuna
    import yaml

    base_config = load_train_config(config_path, overrides)
    space = parse_space(base_config.search)
    if method == "grid":
        not_choice = [k for k, (kind, _) in space.items() if kind != "choice"]
        if not_choice:
            raise ConfigError(f"sweep: grid search needs 'choice' ranges; not for {', '.join(not_choice)}")
        grid = {k: values for k, (_, values) in space.items()}
        size = len(list(itertools.product(*grid.values())))
        trials = min(trials or size, size)
        sampler = optuna.samplers.GridSampler(grid, seed=base_config.training.seed)
    else:
        if not trials:
            raise ConfigError(f"sweep: {method} search needs --trials N")
        sampler = optuna_sampler(method, None, base_config.training.seed)
    destination = base_config.resolve(base_config.output_dir) / base_config.name
    if destination.exists():
        raise ConfigError(f"{destination} exists; remove it or choose another name")

    work = run_dir(base_config) / "sweep"
    shutil.rmtree(work, ignore_errors=True)
    # Trial adapters are written beside the destination (hidden names), so that the winner is renamed into
    # place at the same depth and the relative paths in its variant.yaml stay valid.
    trial_prefix = f".{base_config.name}-trial-"
    metric = f"eval_{base_config.tasks[0].name}_loss"
    rows: list[dict[str, Any]] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=sampler,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))

    def objective(trial) -> float:
        chosen = {}
        for key, (kind, values) in space.items():
            if kind == "choice":
                chosen[key] = trial.suggest_categorical(key, values)
            elif kind == "int":
                chosen[key] = trial.suggest_int(key, int(values[0]), int(values[1]))
            else:
                chosen[key] = trial.suggest_float(key, values[0], values[1], log=kind == "loguniform")
        data = apply_overrides(yaml.safe_load(Path(config_path).read_text()), overrides)
        data = apply_overrides(data, [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in chosen.items()])
        data.update(name=f"{trial_prefix}{trial.number}", output_dir=str(destination.parent),
                    runs_dir=str(work / "runs"))
        trial_path = work / f"trial-{trial.number}.yaml"
        trial_path.parent.mkdir(parents=True, exist_ok=True)
        # Relative paths in the config stay relative to the original file's folder.
        trial_path.write_text(yaml.safe_dump({**data, **_absolute_paths(base_config, data)}))
        row = {"trial": trial.number, **chosen}
        rows.append(row)
        try:
            folder = train(load_train_config(trial_path), quiet=quiet, callbacks=[PruneOnValidation(trial, metric)])
        except optuna.TrialPruned:
            row.update(state="pruned")
            raise
        card = yaml.safe_load((folder / "card.yaml").read_text())
        value = card["metrics"]["adapter"][metric]
        row.update(state="complete", **{metric: value})
        return value

    try:
        study.optimize(objective, n_trials=trials, catch=())
        best = study.best_trial.number
        best_folder = destination.parent / f"{trial_prefix}{best}"
        _write_table(rows, metric, best, best_folder)
        for name, extra in (("card.yaml", {"sweep": {"method": method, "trials": len(rows), "best_trial": best,
                                                      "space": base_config.search}}), ("variant.yaml", {})):
            document = yaml.safe_load((best_folder / name).read_text())
            document.update(name=base_config.name, **extra)
            (best_folder / name).write_text(yaml.safe_dump(document, sort_keys=False))
        os.rename(best_folder, destination)
    finally:  # the other trials' adapters and every trial's checkpoints
        for folder in destination.parent.glob(f"{trial_prefix}*"):
            shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return destination


def _absolute_paths(config: TrainConfig, data: dict[str, Any]) -> dict[str, Any]:
    """The config's file settings made absolute, so the trial config works from another folder."""
    out: dict[str, Any] = {}
    if data.get("variant"):
        out["variant"] = str(config.resolve(data["variant"]))
    tasks = [dict(t) for t in data.get("tasks", [])]
    for task in tasks:
        if task.get("file"):
            task["file"] = str(config.resolve(task["file"]))
        if task.get("template") and config.resolve(task["template"]).exists():
            task["template"] = str(config.resolve(task["template"]))
    if tasks:
        out["tasks"] = tasks
    training = dict(data.get("training") or {})
    for key in ("validation_file", "test_file"):
        if training.get(key):
            training[key] = str(config.resolve(training[key]))
    if training:
        out["training"] = training
    return out


def _write_table(rows: list[dict[str, Any]], metric: str, best: int, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["trial", "state", metric] + [k for k in rows[0] if k not in ("trial", "state", metric)]
    with open(folder / "sweep.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{row.get(k):.4g}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys]
        lines.append("| " + " | ".join(cells) + (" | **best**" if row["trial"] == best else "") + " |")
    (folder / "sweep.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    done = [r for r in rows if r.get("state") == "complete"]
    ax.bar([str(r["trial"]) for r in done], [r[metric] for r in done],
           color=["tab:green" if r["trial"] == best else "tab:gray" for r in done])
    ax.set_xlabel("trial (pruned trials not shown)")
    ax.set_ylabel(metric.replace("eval_", "validation ").replace("_loss", " loss"))
    ax.set_title("sweep: best validation loss per trial")
    fig.tight_layout()
    fig.savefig(folder / "sweep.png", dpi=110)
    plt.close(fig)
