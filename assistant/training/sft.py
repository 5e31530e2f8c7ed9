"""QLoRA supervised fine-tuning: one run, top to bottom. (Imported only by the train verbs: it loads
transformers at import.)

    config -> data check -> examples rendered exactly as served (data.py) -> base (NF4 or full) + LoRA
           -> transformers Trainer (validation, early stopping, checkpoints, TensorBoard: callbacks.py)
           -> adapter folder written to a temporary sibling and renamed into place (card.py)

Also the pre-flight estimate: a few real steps timed on this machine, and what the whole run will cost.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from transformers import Trainer
from transformers.integrations import TensorBoardCallback

from assistant.config import Variant
from assistant.data import DataError
from assistant.generate import IGNORE
from assistant.training.callbacks import Checkpointing, EarlyStopping, LossProgress, PortableTensorBoard, RepackGuard
from assistant.training.config import TrainConfig
from assistant.training.data import Example, PreparedData, prepare_data, serving_variant

# -- model ------------------------------------------------------------------------------------------------


def build_model(config: TrainConfig, variant: Variant):
    """Base model (NF4 or full) with a fresh LoRA adapter; only the adapter trains."""
    import torch
    from peft import LoraConfig, get_peft_model

    from assistant.models.loading import disable_cpu_4bit_repacking, load_base

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
    if config.training.gradient_checkpointing:
        # Non-reentrant checkpointing recomputes a layer from its saved input; the frozen layers below the
        # first adapter need no gradient, so autograd's graph (and the activations it keeps) starts there.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
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


def answer_only_loss(model, inputs: dict[str, Any], num_items_in_batch: Any = None) -> tuple[Any, Any]:
    """The causal LM loss, with logits computed only at the positions that predict a labelled token.

    The model's own loss projects every position onto the whole vocabulary (49k rows for SmolLM2) and only
    then drops the prompt's positions; for a label task that is about 150 positions computed to use 2. Here
    the positions where any row of the batch has a label are kept (``logits_to_keep``) and the loss is the
    same sum of cross-entropies over labelled tokens, divided as the model divides it: by
    ``num_items_in_batch`` when the Trainer counts it across gradient accumulation, else by the batch's own
    count. Returns ``(loss, outputs)``; ``outputs.logits`` holds the kept positions only.
    """
    import torch

    targets = inputs["labels"][:, 1:]  # the token at t + 1 is predicted at position t
    keep = (targets != IGNORE).any(dim=0).nonzero().squeeze(-1)
    if keep.numel() == 0:  # no labelled token in the batch: keep one position for a well-formed zero loss
        keep = torch.zeros(1, dtype=torch.long, device=targets.device)
    outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), logits_to_keep=keep)
    logits = outputs.logits.float()
    kept = targets[:, keep].to(logits.device)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), kept.reshape(-1),
                                             ignore_index=IGNORE, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else (kept != IGNORE).sum().clamp(min=1)
    return loss / count, outputs


class AnswerOnlyTrainer(Trainer):
    """The Trainer with ``answer_only_loss`` (``training.logits: answer``): the same loss, scaled for gradient
    accumulation and across processes exactly as the model's own loss would be."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        counted = num_items_in_batch if self.model_accepts_loss_kwargs else None  # as the model would get it
        loss, outputs = answer_only_loss(model, inputs, counted)
        if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs and counted is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return (loss, outputs) if return_outputs else loss



# -- pre-flight -------------------------------------------------------------------------------------------


@dataclass
class StepTiming:
    """A few real training steps timed on this machine, after warm-up."""

    tokens_per_second: float
    """Real (non-padding) tokens per second of forward, backward and optimizer step."""
    forward_tokens_per_second: float
    """Real tokens per second of a forward pass alone, as the evaluations run it: validation batches in their
    order, padded to their longest example (the Trainer's evaluation sorts nothing)."""
    load_seconds: float
    """Loading the base and attaching the adapter."""
    peak_memory_bytes: float
    """Peak GPU memory allocated, or the process's peak resident memory on the CPU."""
    startup_seconds: float = 0.0
    """What the process spent before loading the model (imports, reading and rendering the data): the
    training command spends it too."""


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


WARMUP_STEPS = 2
"""Steps run before timing: the first steps on a CPU are slow (memory allocation, thread pools spinning up);
timing them made the estimate 1.6x too long (13.0 minutes for a run of 8.2)."""


def measure_steps(config: TrainConfig, variant: Variant, data: PreparedData, steps: int = 3) -> StepTiming:
    """Times real training steps on batches built as the run builds them (examples of similar length
    together), with the run's own loss (logits only where the answer is, unless ``training.logits: all``):
    tokens/s of training, of a forward pass alone, the load time and the peak memory.

    Used by the pre-flight estimate, so that 'how long will this take' is measured on this machine.
    """
    import resource

    import torch

    started = time.perf_counter()
    base, model = build_model(config, variant)
    load_seconds = time.perf_counter() - started
    t = config.training
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.learning_rate)
    collate = PadToLongest(base.tokenizer.pad_token_id)
    rng = random.Random(t.seed)
    by_length = sorted(data.train, key=lambda e: len(e.input_ids))
    device = next(model.parameters()).device

    def batch() -> dict:
        start = rng.randrange(max(1, len(by_length) - t.batch_size + 1))
        rows = ExampleDataset(by_length[start : start + t.batch_size])
        return {k: v.to(device) for k, v in collate([rows[i] for i in range(len(rows))]).items()}

    def loss_of(inputs: dict):  # the loss exactly as the run's Trainer computes it
        return answer_only_loss(model, inputs)[0] if t.logits == "answer" else model(**inputs).loss

    timings = []
    for step in range(WARMUP_STEPS + steps):
        inputs = batch()
        began = time.perf_counter()
        loss = loss_of(inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= WARMUP_STEPS:
            timings.append((time.perf_counter() - began, int(inputs["attention_mask"].sum())))
    model.eval()
    # Evaluation-shaped batches: validation examples in order (padding and all), under no_grad as the
    # Trainer evaluates; the first batch warms the path up and is not counted.
    shown = [e for v in data.validation.values() for e in v] or by_length
    eval_batches = [shown[i : i + t.batch_size] for i in range(0, min(len(shown), 4 * t.batch_size), t.batch_size)]
    forward = []
    with torch.no_grad():
        for rows in eval_batches or [by_length[: t.batch_size]]:
            dataset = ExampleDataset(rows)
            inputs = {k: v.to(device) for k, v in collate([dataset[i] for i in range(len(dataset))]).items()}
            began = time.perf_counter()
            loss_of(inputs)
            forward.append((time.perf_counter() - began, int(inputs["attention_mask"].sum())))
    forward = forward[1:] or forward
    model.train()
    if base.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return StepTiming(tokens_per_second=sum(n for _, n in timings) / sum(s for s, _ in timings),
                      forward_tokens_per_second=sum(n for _, n in forward) / sum(s for s, _ in forward),
                      load_seconds=load_seconds, peak_memory_bytes=float(peak), startup_seconds=process_seconds(started))


def process_seconds(until: float) -> float:
    """Seconds from this process's start to the ``time.perf_counter()`` reading ``until`` (Linux; else 0)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    alive = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    return max(0.0, alive - (time.perf_counter() - until))


def estimate(config: TrainConfig, data: PreparedData, measured: StepTiming | None) -> PreflightEstimate:
    """Optimizer steps, epochs and tokens of the run the config describes; with a measurement, also its
    wall time (loading, training, and every evaluation the run makes) and peak memory."""
    t = config.training
    steps_per_epoch = math.ceil(len(data.train) / (t.batch_size * t.grad_accum))
    steps = t.max_steps or math.ceil(steps_per_epoch * t.epochs)
    epochs = steps / steps_per_epoch
    tokens = int(data.stats.train_tokens_per_epoch * epochs)
    plan = PreflightEstimate(optimizer_steps=steps, epochs=round(epochs, 2), training_tokens=tokens)
    if measured:
        # Forward-only passes: validation before training, every eval_every steps and after; the test file
        # (when set) before and after; and for label tasks, each validation example once per label (the
        # card's label predictions).
        val_tokens = sum(len(e.input_ids) for v in data.validation.values() for e in v)
        test_tokens = sum(len(e.input_ids) for e in data.test)
        label_tokens = sum(len(e.input_ids) * len(task_labels(data, task.name))
                           for task in config.tasks if task.kind == "label" for e in data.validation.get(task.name, []))
        forward_tokens = (steps // t.eval_every + 2) * val_tokens + 2 * test_tokens + label_tokens
        seconds = (measured.startup_seconds + measured.load_seconds + tokens / measured.tokens_per_second
                   + forward_tokens / measured.forward_tokens_per_second)
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
    from transformers import TrainingArguments
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
        prediction_loss_only=True,  # validation needs the loss alone, not every logit kept for metrics
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length",
        disable_tqdm=quiet,
        dataloader_num_workers=0,
        ddp_backend=("nccl" if cuda else "gloo") if distributed else None,
    )
    stopping = [EarlyStopping(t.patience)] if t.patience else []
    validation = {name: ExampleDataset(v) for name, v in data.validation.items() if v}
    trainer_class = AnswerOnlyTrainer if t.logits == "answer" else Trainer
    trainer = trainer_class(model=model, args=args, train_dataset=ExampleDataset(data.train), eval_dataset=validation,
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
    # The wall time of a resumed run counts its earlier attempts: each checkpoint records the time so far.
    earlier = _elapsed_before(work) if resume else 0.0
    elapsed = work / "elapsed.json"
    checkpointing = Checkpointing(t.checkpoint_minutes, lambda: elapsed.write_text(
        json.dumps({"seconds": earlier + time.time() - started})) if main_process else None)
    trainer.add_callback(checkpointing)
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    if checkpointing.interrupted:
        saved = _last_checkpoint(work / "checkpoints")
        raise TrainingInterrupted(f"stopped at step {trainer.state.global_step}; checkpoint "
                                  f"{saved.name if saved else 'none'} saved. Continue with the same command and --resume.")
    after = trainer.evaluate()
    test_after = trainer.evaluate(ExampleDataset(data.test), metric_key_prefix="test") if data.test else {}
    labels = label_predictions(model, data, config, base.tokenizer)
    for task, found in labels.items():
        if found["collapsed"]:
            n, total = found["predicted"][found["onto"]], sum(found["predicted"].values())
            print(f"warning: task {task} collapsed: the adapter answers {found['onto']!r} for {n} of {total} "
                  f"validation examples, where {found['true'].get(found['onto'], 0)} have that label. It has learned "
                  "the label's frequency, not the task: train longer, lower the learning rate, or set balance: "
                  "true on the task. The card records this.", file=sys.stderr)
    wall = earlier + time.time() - started
    if not main_process:
        return None

    from assistant.training.card import write_adapter

    return write_adapter(
        destination, model=model, base=base, config=config, variant=variant, data=data,
        history=trainer.state.log_history, metrics={"base": {**before, **test_before}, "adapter": {**after, **test_after},
                                               **({"labels": labels} if labels else {})},
        wall_seconds=wall, steps=trainer.state.global_step, tokens_seen=trainer.state.num_input_tokens_seen,
        tensorboard=work / "tensorboard", best_checkpoint=trainer.state.best_model_checkpoint,
        resumed_from=int(last.name.split("-")[1]) if last else None,
        processes=int(os.environ.get("WORLD_SIZE", "1")),
    )


def _elapsed_before(work: Path) -> float:
    """Seconds the earlier attempts of a resumed run took, up to their last checkpoint (0 when unknown)."""
    try:
        return float(json.loads((work / "elapsed.json").read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return 0.0


def task_labels(data: PreparedData, task: str) -> set[tuple[int, ...]]:
    """The distinct answers (token ids) of a label task's training examples: the labels it chooses among."""
    found = set()
    for example in data.train:
        if example.task == task:
            start = next(i for i, x in enumerate(example.labels) if x != IGNORE)
            found.add(tuple(example.input_ids[start:]))
    return found


def label_predictions(model, data: PreparedData, config: TrainConfig, tokenizer) -> dict[str, dict[str, Any]]:
    """For each label task, the validation examples' labels as the model predicts them (of the task's labels,
    the one whose answer tokens it finds likeliest after the served prompt) against the true ones, and whether
    the predictions collapsed: 90% or more of them one label that is under 60% of the true labels."""
    import torch

    def split(example: Example) -> tuple[list[int], tuple[int, ...]]:
        start = next(i for i, x in enumerate(example.labels) if x != IGNORE)
        return example.input_ids[:start], tuple(example.input_ids[start:])

    found = {}
    for task in config.tasks:
        examples = data.validation.get(task.name) or []
        if task.kind != "label" or not examples:
            continue
        answers = sorted(task_labels(data, task.name))
        name = {a: tokenizer.decode(list(a), skip_special_tokens=True).strip() for a in answers}
        predicted, true = {}, {}
        model.eval()
        with torch.inference_mode():
            for example in examples:
                prompt, answer = split(example)
                rows = [prompt + list(a) for a in answers]
                width = max(map(len, rows))
                ids = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=model.device)
                logprobs = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
                scores = [sum(logprobs[i, len(prompt) + j - 1, t].item() for j, t in enumerate(a))
                          for i, a in enumerate(answers)]
                guess = name[answers[max(range(len(answers)), key=scores.__getitem__)]]
                predicted[guess] = predicted.get(guess, 0) + 1
                label = name.get(answer, tokenizer.decode(list(answer), skip_special_tokens=True).strip())
                true[label] = true.get(label, 0) + 1
        top = max(predicted, key=predicted.get)
        collapsed = predicted[top] >= 0.9 * len(examples) and true.get(top, 0) < 0.6 * len(examples)
        found[task.name] = {"predicted": predicted, "true": true, "collapsed": collapsed, "onto": top if collapsed else None}
    return found


def _last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint. The Trainer writes trainer_state.json last, so a folder without it
    is one the process was killed while writing."""
    complete = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()] if folder.is_dir() else []
    return max(complete, key=lambda p: int(p.name.split("-")[1]), default=None)
