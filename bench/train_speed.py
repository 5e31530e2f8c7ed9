"""Training speed: our recipe against the common tutorial recipe, same data, same optimizer steps.

    .venv/bin/python bench/train_speed.py [--config configs/tidewater-train.yaml] [--steps 6] [--repeats 2]

Both recipes train the same LoRA on the same base (the training config's: NF4 by default) over the same
examples, rendered exactly as ``assistant train`` renders them, with the transformers ``Trainer``:

* ours: each batch padded to its own longest example (``PadToLongest``) and batches drawn from
  examples of similar length (``train_sampling_strategy="group_by_length"``), as ``assistant train`` does;
* tutorial: every example tokenized with ``padding="max_length"`` to ``training.max_seq_len`` and
  batched by ``default_data_collator`` in random order;
* all-logits (``--recipes ours,all-logits``): ours, but with the model's own loss, which computes logits
  over the whole vocabulary at every position, as ``training.logits: all`` does; ours computes them only
  where the answer is predicted (``training.logits: answer``, the default);
* levers (``--lever "NAME: KEY=VALUE KEY=VALUE"``, repeatable): ours with those settings changed, e.g.
  ``--lever "fp32: quantization=none" --lever "checkpointing: training.gradient_checkpointing=true"``;
  each lever is compared with ours as the config stands.

The two alternate (ours, tutorial, ours, tutorial, ...) within one command so that a slow phase of a noisy
machine does not land on one of them. Each run trains in a fresh child process, so that memory the
allocator kept from an earlier run cannot count towards a later run's peak. Reported per recipe: wall
time of training, real (non-padding) tokens per second, all tokens per second including padding, and peak
resident memory (the kernel's high-water mark, reset just before training through /proc/self/clear_refs,
so model loading and data preparation are left out; Linux only).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments, default_data_collator
from transformers.utils import logging as hf_logging

from assistant.training.config import load_train_config
from assistant.training.data import prepare_data, serving_variant
from assistant.training.sft import AnswerOnlyTrainer, ExampleDataset, PadToLongest, build_model

ROOT = Path(__file__).resolve().parent.parent


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM, the peak resident set size


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class FixedLengthDataset:
    """The tutorial's tokenization: every example padded to max_length, labels -100 on padding."""

    def __init__(self, examples, max_length: int, pad_id: int):
        self.rows = []
        for e in examples:
            pad = max_length - len(e.input_ids)
            self.rows.append({"input_ids": torch.tensor(e.input_ids + [pad_id] * pad),
                              "attention_mask": torch.tensor([1] * len(e.input_ids) + [0] * pad),
                              "labels": torch.tensor(e.labels + [-100] * pad)})

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def run(recipe: str, config, variant, examples, steps: int) -> dict:
    t = config.training
    base, model = build_model(config, variant)
    pad = base.tokenizer.pad_token_id
    if recipe in ("ours", "all-logits"):
        dataset, collator, sampling = ExampleDataset(examples), PadToLongest(pad), "group_by_length"
    else:
        dataset, collator, sampling = FixedLengthDataset(examples, t.max_seq_len, pad), default_data_collator, "random"
    args = TrainingArguments(
        output_dir=str(ROOT / "runs" / "bench-train-speed"), per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.learning_rate, max_steps=steps,
        lr_scheduler_type="constant", save_strategy="no", eval_strategy="no", report_to=[], logging_steps=steps,
        use_cpu=not base.device.startswith("cuda"), seed=t.seed, data_seed=t.seed, remove_unused_columns=False,
        include_num_input_tokens_seen="all", train_sampling_strategy=sampling, disable_tqdm=True,
    )
    trainer_class = AnswerOnlyTrainer if recipe == "ours" else Trainer
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, data_collator=collator)
    real_tokens = [0]
    original = trainer.training_step

    def counting_step(model, inputs, *rest, **kw):
        real_tokens[0] += int(inputs["attention_mask"].sum())
        return original(model, inputs, *rest, **kw)

    trainer.training_step = counting_step
    reset_peak_rss()
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    result = {"seconds": seconds, "real_tokens": real_tokens[0], "all_tokens": int(trainer.state.num_input_tokens_seen),
              "peak_rss": peak_rss_bytes()}
    del trainer, model, base
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "tidewater-train.yaml"),
                        help="training config whose base, LoRA, batch and data are used")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per run (default 6)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each recipe, alternating (default 2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training setting, e.g. training.batch_size=4 (repeatable)")
    parser.add_argument("--recipes", default="ours,tutorial",
                        help="the two recipes to compare: ours,tutorial (default) or ours,all-logits")
    parser.add_argument("--lever", dest="levers", action="append", default=[], metavar="'NAME: KEY=VALUE ...'",
                        help="compare ours with ours under these settings (repeatable); replaces --recipes")
    parser.add_argument("--child", choices=["ours", "tutorial", "all-logits"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    levers: dict[str, list[str]] = {}  # recipe name -> extra overrides
    for lever in args.levers:
        name, _, settings = lever.partition(":")
        if not name.strip() or not settings.split() or any("=" not in s for s in settings.split()):
            parser.error(f"--lever {lever!r}: expected 'NAME: KEY=VALUE [KEY=VALUE ...]'")
        levers[name.strip()] = settings.split()
    hf_logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    config = load_train_config(args.config, args.overrides)
    variant = serving_variant(config)
    data = prepare_data(config, variant)
    t = config.training
    per_run = args.steps * t.batch_size * t.grad_accum
    examples = random.Random(t.seed).sample(data.train, per_run)  # both recipes see exactly these
    if args.child:
        print("RESULT " + json.dumps(run(args.child, config, variant, examples, args.steps)))
        return

    print(f"{config.name}: base {variant.model.base} ({variant.model.quantization}), LoRA r={config.lora.r}, "
          f"batch {t.batch_size} x {t.grad_accum}, {args.steps} steps, {per_run} examples "
          f"(mean {statistics.mean(len(e.input_ids) for e in examples):.0f} tokens), max_length {t.max_seq_len}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    recipes = ["ours", *levers] if levers else args.recipes.split(",")
    results: dict[str, list[dict]] = {recipe: [] for recipe in recipes}
    for repeat in range(args.repeats):
        for recipe in recipes:
            child = "ours" if recipe in levers else recipe
            command = [sys.executable, __file__, "--child", child, "--config", args.config, "--steps", str(args.steps)]
            command += [f"--set={o}" for o in args.overrides + levers.get(recipe, [])]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            r = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
            results[recipe].append(r)
            print(f"  run {repeat + 1} {recipe:8s} {r['seconds']:7.1f} s  real {r['real_tokens'] / r['seconds']:6.1f} tok/s"
                  f"  all {r['all_tokens'] / r['seconds']:6.1f} tok/s  peak RSS {r['peak_rss'] / 2**30:.2f} GiB", flush=True)

    def median(recipe, key):
        return statistics.median(key(r) for r in results[recipe])

    print("\n| recipe | wall s (median) | real tokens/s | all tokens/s (with padding) | peak RSS GiB |")
    print("|---|---:|---:|---:|---:|")
    for recipe in recipes:
        print(f"| {recipe} | {median(recipe, lambda r: r['seconds']):.1f} "
              f"| {median(recipe, lambda r: r['real_tokens'] / r['seconds']):.1f} "
              f"| {median(recipe, lambda r: r['all_tokens'] / r['seconds']):.1f} "
              f"| {median(recipe, lambda r: r['peak_rss'] / 2**30):.2f} |")
    ours, others = recipes[0], recipes[1:]
    print()
    for other in others:
        speedup = median(other, lambda r: r["seconds"]) / median(ours, lambda r: r["seconds"])
        memory = median(other, lambda r: r["peak_rss"]) / median(ours, lambda r: r["peak_rss"])
        print(f"same examples and steps: {other} runs at {1 / speedup:.2f}x the speed of {ours}, "
              f"with {memory:.2f}x its peak memory")


if __name__ == "__main__":
    main()
