"""QLoRA supervised fine-tuning: one run, top to bottom. (Imported only by the train verbs: it loads
transformers at import.)

    config -> data check -> examples rendered exactly as served -> base (NF4 or full) + LoRA
           -> transformers Trainer (validation, early stopping, checkpoints, TensorBoard)
           -> adapter folder written to a temporary sibling and renamed into place

Every training example is rendered by ``Bot.prepare``, the same code that builds the prompt when the
adapter is served, and the loss covers only the answer tokens (the reply and its end-of-turn marker).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import EarlyStoppingCallback, TrainerCallback
from transformers.integrations import TensorBoardCallback

from assistant.config import TaskSettings, TrainConfig, Variant, load_variant, variant_from_dict
from assistant.data import (
    DataError,
    Record,
    check_records,
    eval_questions,
    format_problems,
    read_jsonl,
    token_stats,
)
from assistant.models import file_sha256

IGNORE = -100  # label value the loss skips


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    task: str
    where: str


# -- building examples ------------------------------------------------------------------------------------


def serving_variant(config: TrainConfig) -> Variant:
    """The variant the adapter is trained with and served with (without the adapter itself)."""
    if config.variant:
        variant = load_variant(config.resolve(config.variant))
    else:
        variant = variant_from_dict({}, root=config.root)
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


def encode(bot, history: list[dict[str, str]], answer: str) -> tuple[list[int], list[int]]:
    """Token ids and labels of one example: the served prompt (masked) followed by the answer.

    The answer's text is whatever the chat template writes after the prompt for this reply, so the
    end-of-turn marker is learned too and the model stops where serving expects it to.
    """
    prepared = bot.prepare(history)
    answer_ids = bot.tokenizer(answer_text(bot, prepared, answer), add_special_tokens=False)["input_ids"]
    return prepared.input_ids + answer_ids, [IGNORE] * len(prepared.input_ids) + answer_ids


def answer_text(bot, prepared, answer: str) -> str:
    """What the chat template writes after the served prompt when ``answer`` is the reply: the answer and
    its end-of-turn marker. Used for SFT examples and for DPO's chosen and rejected answers alike."""
    full = bot.tokenizer.apply_chat_template(prepared.messages + [{"role": "assistant", "content": answer}],
                                             tokenize=False)
    if not full.startswith(prepared.text):
        raise DataError(f"the chat template of {bot.variant.model.base} renders the prompt differently when an "
                        "answer follows; cannot separate prompt and answer reliably")
    return full[len(prepared.text):]


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
class PreparedData:
    train: list[Example]
    validation: dict[str, list[Example]]
    test: list[Example]
    files: dict[str, dict[str, Any]]
    stats: dict[str, Any]


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
        for part, rows in (("train", train_records), ("validation", val_records)):
            for record in rows:
                for history, answer in task_pairs(record, task):
                    ids, labels_ = encode(bot, history, answer)
                    if len(ids) > t.max_seq_len:
                        problems.append(f"{record.where}: {len(ids)} tokens rendered, over training.max_seq_len "
                                        f"= {t.max_seq_len}")
                        continue
                    encoded[part].append(Example(ids, labels_, task.name, record.where))
                    lengths.append(len(ids))
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
                ids, labels_ = encode(bot, history, answer)
                test.append(Example(ids[: t.max_seq_len], labels_[: t.max_seq_len], "test", record.where))
    if problems:
        raise DataError(format_problems(problems))
    train = mixture(per_task_train, config.tasks, t.seed)
    stats = {
        "examples": {name: len(v) for name, v in per_task_train.items()},
        "validation": {name: len(v) for name, v in validation.items()},
        "mixture": {name: sum(1 for e in train if e.task == name) for name in per_task_train},
        "tokens": token_stats(lengths),
        "train_tokens_per_epoch": sum(len(e.input_ids) for e in train),
        "answer_tokens_per_epoch": sum(sum(1 for x in e.labels if x != IGNORE) for e in train),
    }
    return PreparedData(train, validation, test, files, stats)


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


# -- callbacks --------------------------------------------------------------------------------------------


class PortableTensorBoard(TensorBoardCallback):
    """TensorBoard logging whose recorded settings carry no path of this machine: the training arguments
    are logged with folders relative to the runs folder, and the model config (which names the cache folder
    the base was loaded from) is not logged. The logs are copied into the adapter folder, which is shared."""

    def __init__(self, runs: Path):
        super().__init__()
        self.runs = runs

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.tb_writer is None:
            self._init_summary_writer(args)
        if self.tb_writer is not None:
            settings = json.loads(args.to_json_string())
            settings["output_dir"] = os.path.relpath(args.output_dir, self.runs)
            self.tb_writer.add_text("args", json.dumps(settings, indent=2, sort_keys=True))


class EarlyStopping(EarlyStoppingCallback):
    """Early stopping on the first task's validation loss. With several validation sets (and the test
    set) the Trainer reports each in its own evaluation call; only the one with the metric counts."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and args.metric_for_best_model in metrics:
            super().on_evaluate(args, state, control, metrics, **kwargs)


class Checkpointing(TrainerCallback):
    """Saves a checkpoint every ``minutes`` of wall time (besides the one at each evaluation), and on Ctrl-C:
    the first SIGINT lets the current step finish, saves a checkpoint and stops the run; a second one
    interrupts at once. ``interrupted`` tells the caller not to publish the adapter."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.last = time.monotonic()
        self.interrupted = False
        self._previous = None

    def on_train_begin(self, args, state, control, **kwargs):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)

    def _on_interrupt(self, signum, frame):
        import signal

        self.interrupted = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)  # a second Ctrl-C: at once
        print("\ninterrupted: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.interrupted:
            control.should_save = True
            control.should_training_stop = True
        elif self.seconds and time.monotonic() - self.last >= self.seconds:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last = time.monotonic()

    def on_train_end(self, args, state, control, **kwargs):
        import signal
        import threading

        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)


class RepackGuard(TrainerCallback):
    """Fails loudly if any 4-bit layer is in the CPU inference packing while training (see
    ``models.disable_cpu_4bit_repacking``): its gradients would be silently dropped."""

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        from assistant.models import repacked_4bit_layers

        packed = repacked_4bit_layers(model)
        if packed:
            raise RuntimeError(f"{len(packed)} 4-bit layers were repacked for CPU inference (e.g. {packed[0]}); "
                               "gradients through them would be dropped")


class LossProgress(TrainerCallback):
    """One progress bar over optimizer steps showing loss, validation loss, tokens/s and the ETA."""

    def __init__(self):
        self.bar = None
        self.started = None
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step",
                        dynamic_ncols=True)
        self.started = (time.time(), state.num_input_tokens_seen or 0)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        seconds = time.time() - self.started[0]
        tokens = (state.num_input_tokens_seen or 0) - self.started[1]
        if seconds > 0 and tokens:
            self.postfix["tok/s"] = f"{tokens / seconds:.0f}"
        self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, value in (logs or {}).items():
            if key == "loss" or (key.startswith("eval_") and key.endswith("_loss")):
                self.postfix[key.replace("eval_", "val_")] = f"{value:.3f}"

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# -- the run ----------------------------------------------------------------------------------------------


def measure_steps(config: TrainConfig, variant: Variant, data: PreparedData, steps: int = 2) -> dict[str, float]:
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
    return {"tokens_per_second": sum(n for _, n in timings) / seconds, "peak_memory_bytes": float(peak)}


def estimate(config: TrainConfig, data: PreparedData, measured: dict[str, float] | None) -> dict[str, Any]:
    t = config.training
    steps_per_epoch = math.ceil(len(data.train) / (t.batch_size * t.grad_accum))
    steps = t.max_steps or math.ceil(steps_per_epoch * t.epochs)
    epochs = steps / steps_per_epoch
    tokens = int(data.stats["train_tokens_per_epoch"] * epochs)
    out: dict[str, Any] = {"optimizer_steps": steps, "epochs": round(epochs, 2), "training_tokens": tokens}
    if measured:
        # Validation passes are forward-only (about a third of a training step's cost per token).
        val_tokens = sum(len(e.input_ids) for v in data.validation.values() for e in v)
        val_runs = steps // t.eval_every + 2
        seconds = (tokens + val_runs * val_tokens / 3) / measured["tokens_per_second"]
        out.update(measured_tokens_per_second=round(measured["tokens_per_second"], 1),
                   estimated_minutes=round(seconds / 60, 1),
                   peak_memory_gib=round(measured["peak_memory_bytes"] / 2**30, 2))
    return out


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
