"""QLoRA supervised fine-tuning: one run, top to bottom. (Imported only by the train verbs: it loads
transformers at import.)

    config -> data check -> examples rendered exactly as served (train_data.py) -> base (NF4 or full) + LoRA
           -> transformers Trainer (validation, early stopping, checkpoints, TensorBoard: train_callbacks.py)
           -> adapter folder written to a temporary sibling and renamed into place (card.py)

Also the pre-flight estimate: a few real steps timed on this machine, and what the whole run will cost.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from transformers.integrations import TensorBoardCallback

from assistant.config import Variant
from assistant.data import DataError
from assistant.generate import IGNORE
from assistant.train_callbacks import Checkpointing, EarlyStopping, LossProgress, PortableTensorBoard, RepackGuard
from assistant.train_config import TrainConfig
from assistant.train_data import Example, PreparedData, prepare_data, serving_variant

# -- model ------------------------------------------------------------------------------------------------


def build_model(config: TrainConfig, variant: Variant):
    """Base model (NF4 or full) with a fresh LoRA adapter; only the adapter trains."""
    import torch
    from peft import LoraConfig, get_peft_model

    from assistant.models import disable_cpu_4bit_repacking, load_base

    m = variant.model
    base = load_base(m.base, m.quantization, m.dtype, m.device, m.trust_remote_code)
    model = base.model
    if m.quantization == "nf4":
        disable_cpu_4bit_repacking(model)
    model.config.use_cache = False  # the KV cache is for generation; it only costs memory in training
    layers = None
    if config.lora.last_layers:
        count = model.config.num_hidden_layers
        layers = list(range(max(0, count - config.lora.last_layers), count))
    torch.manual_seed(config.training.seed)
    lora = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                      target_modules=config.lora.target_modules, layers_to_transform=layers, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.enable_input_require_grads()
    model.train()
    return base, model


class ExampleDataset:
    """A list of Examples in the shape the Trainer's data loader expects."""

    def __init__(self, examples: list[Example]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        e = self.examples[i]
        return {"input_ids": e.input_ids, "labels": e.labels}


class PadToLongest:
    """Dynamic padding: each batch is padded to its own longest example, never to a fixed length."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = [r["input_ids"] + [self.pad_id] * (width - len(r["input_ids"])) for r in rows]
        labels = [r["labels"] + [IGNORE] * (width - len(r["labels"])) for r in rows]
        mask = [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}



# -- pre-flight -------------------------------------------------------------------------------------------


@dataclass
class StepTiming:
    """A few real training steps timed on this machine."""

    tokens_per_second: float
    """Real (non-padding) tokens per second of forward, backward and optimizer step."""
    peak_memory_bytes: float
    """Peak GPU memory allocated, or the process's peak resident memory on the CPU."""


@dataclass
class PreflightEstimate:
    """What a run will cost, known before it starts. The measured fields are None without a StepTiming."""

    optimizer_steps: int
    epochs: float
    training_tokens: int
    measured_tokens_per_second: float | None = None
    estimated_minutes: float | None = None
    peak_memory_gib: float | None = None

    def describe(self) -> str:
        """'optimizer steps 74, epochs 1.0, training tokens 197000, ...': the fields that are known."""
        return ", ".join(f"{f.name.replace('_', ' ')} {getattr(self, f.name)}" for f in fields(self)
                         if getattr(self, f.name) is not None)


def measure_steps(config: TrainConfig, variant: Variant, data: PreparedData, steps: int = 2) -> StepTiming:
    """Times a few real training steps on batches of typical length: tokens/s and peak memory.

    Used by the pre-flight estimate, so that 'how long will this take' is measured on this machine.
    """
    import resource

    import torch

    base, model = build_model(config, variant)
    t = config.training
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.learning_rate)
    collate = PadToLongest(base.tokenizer.pad_token_id)
    rng = random.Random(t.seed)
    device = next(model.parameters()).device
    timings = []
    for step in range(steps + 1):  # the first step warms up and is not timed
        rows = ExampleDataset(rng.sample(data.train, min(t.batch_size, len(data.train))))
        batch = {k: v.to(device) for k, v in collate([rows[i] for i in range(len(rows))]).items()}
        began = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:
            timings.append((time.perf_counter() - began, int(batch["attention_mask"].sum())))
    seconds = sum(s for s, _ in timings)
    if base.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return StepTiming(tokens_per_second=sum(n for _, n in timings) / seconds, peak_memory_bytes=float(peak))


def estimate(config: TrainConfig, data: PreparedData, measured: StepTiming | None) -> PreflightEstimate:
    """Optimizer steps, epochs and tokens of the run the config describes; with a measurement, also its
    wall time and peak memory."""
    t = config.training
    steps_per_epoch = math.ceil(len(data.train) / (t.batch_size * t.grad_accum))
    steps = t.max_steps or math.ceil(steps_per_epoch * t.epochs)
    epochs = steps / steps_per_epoch
    tokens = int(data.stats.train_tokens_per_epoch * epochs)
    plan = PreflightEstimate(optimizer_steps=steps, epochs=round(epochs, 2), training_tokens=tokens)
    if measured:
        # Validation passes are forward-only (about a third of a training step's cost per token).
        val_tokens = sum(len(e.input_ids) for v in data.validation.values() for e in v)
        val_runs = steps // t.eval_every + 2
        seconds = (tokens + val_runs * val_tokens / 3) / measured.tokens_per_second
        plan.measured_tokens_per_second = round(measured.tokens_per_second, 1)
        plan.estimated_minutes = round(seconds / 60, 1)
        plan.peak_memory_gib = round(measured.peak_memory_bytes / 2**30, 2)
    return plan


# -- the run ----------------------------------------------------------------------------------------------


class TrainingInterrupted(Exception):
    """The run was stopped with Ctrl-C after saving a checkpoint; the message says how to continue."""


def run_dir(config: TrainConfig) -> Path:
    return config.resolve(config.runs_dir) / config.name


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False, quiet: bool = False,
          callbacks: list | None = None) -> Path | None:
    """Trains an adapter and writes ``<output_dir>/<name>/``. Returns that folder (None in the other
    processes of a multi-process run, which write nothing).

    Args:
        config: the training configuration.
        resume: continue from the last checkpoint of an interrupted run of the same name.
        overwrite: replace an existing adapter of the same name (atomically, at the end).
        quiet: no progress bar.
        callbacks: extra Trainer callbacks (the sweep's pruner uses this).
    """
    import torch
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import ProgressCallback

    destination = config.resolve(config.output_dir) / config.name
    if destination.exists() and not overwrite:
        raise DataError(f"{destination} exists; pass --overwrite to replace it")
    variant = serving_variant(config)
    data = prepare_data(config, variant)  # all data problems surface before the model loads
    started = time.time()
    # Under torchrun / accelerate launch every process runs this function; only the first writes files.
    main_process = int(os.environ.get("RANK", "0")) == 0
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    t = config.training
    work = run_dir(config)
    if main_process and not resume and work.exists():
        shutil.rmtree(work)
    base, model = build_model(config, variant)
    work.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = math.ceil(len(data.train) / (t.batch_size * t.grad_accum))
    total_steps = t.max_steps or math.ceil(steps_per_epoch * t.epochs)
    primary = config.tasks[0].name
    cuda = base.device.startswith("cuda")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(work / "tensorboard")
    args = TrainingArguments(
        output_dir=str(work / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_schedule if t.lr_schedule != "constant" else "constant_with_warmup",
        warmup_steps=int(t.warmup_ratio * total_steps),
        weight_decay=t.weight_decay,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        eval_strategy="steps",
        eval_steps=t.eval_every,
        save_strategy="steps",
        save_steps=t.eval_every,
        save_total_limit=t.keep_checkpoints,
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_{primary}_loss",
        greater_is_better=False,
        logging_steps=max(1, min(10, t.eval_every)),
        report_to=["tensorboard"],
        seed=t.seed,
        data_seed=t.seed,
        use_cpu=not cuda,
        bf16=cuda and base.dtype == torch.bfloat16,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length",
        disable_tqdm=quiet,
        dataloader_num_workers=0,
        ddp_backend=("nccl" if cuda else "gloo") if distributed else None,
    )
    stopping = [EarlyStopping(t.patience)] if t.patience else []
    validation = {name: ExampleDataset(v) for name, v in data.validation.items() if v}
    trainer = Trainer(model=model, args=args, train_dataset=ExampleDataset(data.train), eval_dataset=validation,
                      data_collator=PadToLongest(base.tokenizer.pad_token_id), callbacks=stopping)
    trainer.remove_callback(TensorBoardCallback)
    trainer.add_callback(PortableTensorBoard(work.parent))
    trainer.add_callback(RepackGuard())
    for callback in callbacks or []:
        trainer.add_callback(callback)
    if not quiet:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(LossProgress())
    # The adapter starts as the identity (LoRA B = 0), so these are the base model's own losses.
    before = trainer.evaluate()
    test_before = trainer.evaluate(ExampleDataset(data.test), metric_key_prefix="test") if data.test else {}
    last = _last_checkpoint(work / "checkpoints") if resume else None
    if resume and last is None:
        raise DataError(f"--resume: nothing to resume from (no complete checkpoint under {work / 'checkpoints'}); "
                        "run without --resume to start from step 0")
    checkpointing = Checkpointing(t.checkpoint_minutes)
    trainer.add_callback(checkpointing)
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    if checkpointing.interrupted:
        saved = _last_checkpoint(work / "checkpoints")
        raise TrainingInterrupted(f"stopped at step {trainer.state.global_step}; checkpoint "
                                  f"{saved.name if saved else 'none'} saved. Continue with the same command and --resume.")
    after = trainer.evaluate()
    test_after = trainer.evaluate(ExampleDataset(data.test), metric_key_prefix="test") if data.test else {}
    wall = time.time() - started
    if not main_process:
        return None

    from assistant.card import write_adapter

    return write_adapter(
        destination, model=model, base=base, config=config, variant=variant, data=data,
        history=trainer.state.log_history, metrics={"base": {**before, **test_before}, "adapter": {**after, **test_after}},
        wall_seconds=wall, steps=trainer.state.global_step, tokens_seen=trainer.state.num_input_tokens_seen,
        tensorboard=work / "tensorboard", best_checkpoint=trainer.state.best_model_checkpoint,
        resumed_from=int(last.name.split("-")[1]) if last else None,
        processes=int(os.environ.get("WORLD_SIZE", "1")),
    )


def _last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint. The Trainer writes trainer_state.json last, so a folder without it
    is one the process was killed while writing."""
    complete = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()] if folder.is_dir() else []
    return max(complete, key=lambda p: int(p.name.split("-")[1]), default=None)
