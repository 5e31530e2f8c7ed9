"""Typed settings of a training run: what `assistant train CONFIG.yaml` reads (supervised fine-tuning), what
`assistant train --method dpo [CONFIG.yaml]` reads (preference tuning from votes) and what `assistant
train-retriever CONFIG.yaml` reads (an embedder or reranker trained on the domain's documents).

Defaults live in the dataclasses below, a YAML file only sets values, and KEY=VALUE overrides from the
command line win over the file. Every problem is reported at once, naming the file, before any data or
model is read. Relative paths resolve against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from assistant.config import EMBEDDED_BASE
from assistant.settings_reader import ConfigError, FileSettings, apply_overrides, build_settings, read_settings_file

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TaskSettings:
    name: str = "support"
    """Task name; per-task validation loss is reported under it."""
    file: str = ""
    """JSONL training file (chat messages, prompt/completion, or text/label rows)."""
    kind: Literal["chat", "label"] = "chat"
    """'chat': learn the assistant replies; 'label': learn to answer each user message with its label."""
    label_field: str = "label"
    """For 'label' tasks: the message field holding the label (e.g. intent), or 'label' for text/label rows."""
    instruction: str = "Classify the customer's message. Answer with exactly one of: {labels}."
    """For 'label' tasks: the system instruction; {labels} becomes the list of labels seen in the data."""
    template: str | None = None
    """Prompt template; default: the variant's for 'chat', classify.j2 for 'label'."""
    weight: float = 1.0
    """Copies of this task's examples per epoch of the mixture: 1 each once, 0.25 a random quarter, 2 twice."""
    cite_field: str | None = None
    """For 'chat' tasks: the row field naming the document the answers come from (the demo's 'source'). When
    retrieval puts a passage of that document in the prompt, the answer learns to end with its number, [n],
    as a template with numbered passages asks (support-cited.j2); answers equal to the variant's abstention
    text are left as they are."""
    balance: bool = False
    """For 'label' tasks: resample the training examples so every label has as many as the most frequent one
    (rarer labels' examples repeat, seeded); validation keeps the data's own distribution."""


@dataclass
class LoraSettings:
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA input: regularization against overfitting."""
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    """Linear layers that get an adapter (default: every attention and MLP projection)."""
    last_layers: int | None = None
    """Adapt only the last N transformer layers (transfer learning: keep early features frozen); none = all."""


@dataclass
class TrainingSettings:
    epochs: float = 2.0
    """Passes over the training mixture (ignored when max_steps is set)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps."""
    batch_size: int = 4
    """Examples per forward pass."""
    grad_accum: int = 1
    """Forward passes per optimizer step (effective batch = batch_size x grad_accum)."""
    learning_rate: float = 2e-4
    """Peak learning rate."""
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup."""
    warmup_ratio: float = 0.05
    """Share of the steps spent warming the learning rate up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay on the adapter weights."""
    max_seq_len: int = 1024
    """Longest example in tokens (rendered prompt + answer); longer ones are refused unless 'truncate' says."""
    truncate: Literal["refuse", "user_middle", "user_left"] = "refuse"
    """Examples over max_seq_len: 'refuse' them as a data error (listed with file:line); 'user_middle' cuts
    the middle out of the user's last message, 'user_left' its beginning, until the example fits. The
    instruction, the retrieved passages and the answer are never cut; an example that cannot fit is refused."""
    logits: Literal["answer", "all"] = "answer"
    """'answer': compute logits only at the positions that predict the answer (the same loss, a fraction of
    the memory and time on label tasks); 'all': over every position, as the model's own loss does."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations during the backward pass instead of keeping them: far less memory
    (activations dominate it on the CPU), about a third more compute."""
    validation_split: float = 0.1
    """Share of each task's rows held out for validation (when no validation_file)."""
    validation_file: str | None = None
    """Validation rows for the first task instead of a split."""
    test_file: str | None = None
    """Held-out cases (e.g. the evaluation set) whose loss is reported for the base and the adapter."""
    eval_every: int = 20
    """Validation loss every N optimizer steps (a checkpoint is saved at the same steps)."""
    patience: int = 3
    """Early stopping: stop after N validations without improvement; 0 turns it off."""
    keep_checkpoints: int = 2
    """Recent checkpoints kept for --resume (the best one is always kept)."""
    checkpoint_minutes: float = 10.0
    """Also save a checkpoint when this many minutes have passed since the last one (0: only at eval_every
    steps). Ctrl-C always saves one before stopping, so a long run loses at most a step."""
    seed: int = 0
    """Seed for the split, the mixture, LoRA initialisation and data order."""


@dataclass
class TrainConfig(FileSettings):
    name: str = "adapter"
    """Adapter name: the result is written to adapters/<name>/."""
    variant: str | None = None
    """Variant file whose base model, prompt and retrieval the adapter is trained with (and served with)."""
    quantization: Literal["nf4", "none"] | None = None
    """Base weights while training: nf4 (QLoRA) or none; default: the variant's."""
    output_dir: str = "adapters"
    """Folder that receives adapters/<name>/."""
    runs_dir: str = "runs"
    """Folder for checkpoints and TensorBoard logs of runs in progress."""
    tasks: list[TaskSettings] = field(default_factory=lambda: [TaskSettings()])
    lora: LoraSettings = field(default_factory=LoraSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    search: dict[str, str] = field(default_factory=dict)
    """For `assistant sweep`: setting -> range, e.g. training.learning_rate: 'loguniform 1e-5 1e-3'."""
    root: str = "."
    """Folder of the config file; relative paths resolve against it."""



def _check_name(name: str, errors: list[str]) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        errors.append(f"name: {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")


def _raise(source: str | Path, errors: list[str]) -> None:
    if errors:
        raise ConfigError(f"{source}: {len(errors)} problem(s):\n  " + "\n  ".join(errors))


def load_train_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Reads a training YAML file and applies KEY=VALUE overrides; every problem reported at once."""
    path = Path(path)
    data = read_settings_file(path, "training config")
    data = apply_overrides(data, list(overrides))
    errors: list[str] = []
    data.pop("root", None)
    config = build_settings(TrainConfig, data, "", errors)
    config.root = str(path.parent.resolve())
    if not errors:
        t = config.training
        if not config.tasks:
            errors.append("tasks: at least one task is needed")
        for i, task in enumerate(config.tasks):
            if not task.file:
                errors.append(f"tasks[{i}].file: a training file is needed")
            elif not config.resolve(task.file).is_file():
                errors.append(f"tasks[{i}].file: {config.resolve(task.file)} does not exist")
            if task.weight <= 0:
                errors.append(f"tasks[{i}].weight: must be above 0")
        if len({task.name for task in config.tasks}) != len(config.tasks):
            errors.append("tasks: names must be distinct")
        for key in ("validation_file", "test_file"):
            value = getattr(t, key)
            if value and not config.resolve(value).is_file():
                errors.append(f"training.{key}: {config.resolve(value)} does not exist")
        if config.variant and not config.resolve(config.variant).is_file():
            errors.append(f"variant: {config.resolve(config.variant)} does not exist")
        if not 0 <= t.validation_split < 1:
            errors.append("training.validation_split: must be in [0, 1)")
        if t.validation_split == 0 and not t.validation_file:
            errors.append("training: set validation_split above 0 or a validation_file (early stopping needs one)")
        for key in ("batch_size", "grad_accum", "eval_every", "max_seq_len"):
            if getattr(t, key) < 1:
                errors.append(f"training.{key}: must be at least 1")
        if config.lora.r < 1:
            errors.append("lora.r: must be at least 1")
        if not 0 <= config.lora.dropout < 1:
            errors.append("lora.dropout: must be in [0, 1)")
        _check_name(config.name, errors)
    _raise(path, errors)
    return config


# ---------------------------------------------------------------------------------------------------------
# Preference tuning: what `assistant train --method dpo [CONFIG.yaml]` reads.


@dataclass
class DpoSettings:
    start_from: str = ""
    """Folder of the SFT adapter to start from (its variant.yaml says how prompts are rendered and served)."""
    pairs: str = ""
    """JSONL of preference pairs {prompt (message list or text), chosen, rejected}, as written by `assistant
    feedback export`."""
    name: str = "dpo"
    """Adapter name: the result is written to <output_dir>/<name>/."""
    output_dir: str = "adapters"
    """Folder that receives <name>/."""
    quantization: Literal["nf4", "none"] | None = None
    """Base weights while training: nf4 or none (full precision: as fast as NF4 on a CPU, without its
    dequantization); default: the SFT adapter's variant's."""
    beta: float = 0.1
    """Strength of the pull towards the reference (the SFT adapter): lower lets preferences move the policy
    further."""
    epochs: float = 1.0
    """Passes over the pairs (ignored when max_steps is set)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps."""
    batch_size: int = 2
    """Pairs per forward pass."""
    grad_accum: int = 1
    """Forward passes per optimizer step (effective batch = batch_size x grad_accum)."""
    learning_rate: float = 5e-5
    """Peak learning rate."""
    max_length: int = 1024
    """Longest prompt plus answer in tokens; TRL truncates longer pairs."""
    seed: int = 0
    """Seed for the data order and dropout."""
    root: str = "."
    """Folder of the config file (the working directory without one); relative paths resolve against it."""

    def resolve(self, value: str) -> Path:
        return (Path(self.root) / Path(value).expanduser()).resolve()

    def hyperparameters(self) -> dict[str, Any]:
        """The settings that shape training, without the files and folders it reads and writes."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("start_from", "pairs", "name", "output_dir", "root")}


def load_dpo_settings(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> DpoSettings:
    """Reads a DPO YAML file (or only the defaults, when ``path`` is None) and applies KEY=VALUE overrides;
    every problem reported at once. Without a file, relative paths resolve against the working directory."""
    data = read_settings_file(Path(path), "DPO config") if path is not None else {}
    data = apply_overrides(data, list(overrides))
    errors: list[str] = []
    data.pop("root", None)
    settings = build_settings(DpoSettings, data, "", errors)
    settings.root = str(Path(path).parent.resolve() if path is not None else Path.cwd())
    if not errors:
        if not settings.start_from:
            errors.append("start_from: the SFT adapter folder to start from is needed (--from ADAPTER)")
        if not settings.pairs:
            errors.append("pairs: a preference pairs file from `assistant feedback export` is needed (--pairs FILE)")
        if settings.beta <= 0:
            errors.append("beta: must be above 0")
        for key in ("batch_size", "grad_accum", "max_length"):
            if getattr(settings, key) < 1:
                errors.append(f"{key}: must be at least 1")
        if settings.max_steps is not None and settings.max_steps < 1:
            errors.append("max_steps: must be at least 1 (or none: epochs decide)")
        _check_name(settings.name, errors)
    _raise(path if path is not None else "train --method dpo", errors)
    return settings


# ---------------------------------------------------------------------------------------------------------
# Retrieval models: what `assistant train-retriever CONFIG.yaml` reads (see ``retriever.py``).


@dataclass
class DraftingSettings:
    base: str = EMBEDDED_BASE
    """Model that drafts questions for each passage: the embedded default, a catalog name (assistant models
    list), a hub id or a local folder."""
    quantization: Literal["nf4", "none"] = "nf4"
    """Its weights with the transformers engine (llama.cpp runs a GGUF base as it is)."""
    questions_per_passage: int = 3
    """Questions asked for per passage; a question is kept only when BM25 finds its passage's document among
    the first three for it."""
    max_new_tokens: int = 96
    """Longest drafted reply in tokens."""


@dataclass
class RetrieverTrainConfig(FileSettings):
    documents: str = ""
    """Folder of the domain's Markdown or text documents (the variant's context.documents)."""
    train: str | None = None
    """JSONL conversations whose rows name their ``source`` document (file name relative to documents); none:
    questions are drafted from the passages (see synthetic). Never the evaluation cases."""
    output: str = ""
    """Folder to write the trained model, its card and README to."""
    base: str | None = None
    """Sentence-transformers model folder to start from; none: the packaged all-MiniLM-L6-v2."""
    kind: Literal["bi-encoder", "cross-encoder"] = "bi-encoder"
    """'bi-encoder': the embedding model of dense and hybrid retrieval (context.embedder); 'cross-encoder': a
    reranker scoring a question and a passage together (context.rerank)."""
    turns: Literal["first", "all"] = "first"
    """Questions of a conversation: its 'first' user message, or 'all' that the assistant answers (a follow-up
    searched with the turn before it, as the served retriever does). A row names one source, and later turns
    often move on to another document."""
    epochs: float = 1.0
    """Passes over the training pairs."""
    batch_size: int = 32
    """Pairs per step; for the bi-encoder every other pair's passages in the batch are negatives too."""
    learning_rate: float = 2e-5
    """Peak learning rate (AdamW, linear decay)."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rate up from 0."""
    max_seq_length: int = 256
    """Longest question or passage in tokens (for the cross-encoder: both together); longer are truncated."""
    chunk_words: int = 120
    """Largest passage, in words: must be the serving variant's context.chunk_words, so that training sees the
    passages retrieval will rank."""
    hard_negatives: int = 1
    """Passages of other documents that BM25 ranks highest for the question, per pair (the cross-encoder needs
    at least 1: they are its label-0 examples)."""
    validation_fraction: float = 0.15
    """Share of the conversations (or drafted passages) held out for the card's before/after figures."""
    seed: int = 0
    """Seed of the split, the data order and the initialisation."""
    synthetic: bool = False
    """Draft questions from the passages with a base model instead of reading conversations (also the case
    when train is none)."""
    drafting: DraftingSettings = field(default_factory=DraftingSettings)
    root: str = "."
    """Folder of the config file; relative paths resolve against it."""


def load_retriever_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RetrieverTrainConfig:
    """Reads a retriever training file and applies KEY=VALUE overrides; every problem reported at once, naming
    the file, before any data or model is read."""
    path = Path(path)
    data = apply_overrides(read_settings_file(path, "retriever training config"), list(overrides))
    errors: list[str] = []
    data.pop("root", None)
    config = build_settings(RetrieverTrainConfig, data, "", errors)
    config.root = str(path.parent.resolve())
    if not errors:
        if not config.documents:
            errors.append("documents: the documents folder is needed")
        elif not config.resolve(config.documents).is_dir():
            errors.append(f"documents: {config.resolve(config.documents)} is not a folder")
        if config.train and config.synthetic:
            errors.append("synthetic: true drafts questions instead of reading train; set one of them")
        elif config.train and not config.resolve(config.train).is_file():
            errors.append(f"train: {config.resolve(config.train)} does not exist")
        if not config.output:
            errors.append("output: the folder to write is needed")
        if config.base and not (config.resolve(config.base) / "config.json").is_file():
            errors.append(f"base: {config.resolve(config.base)} is not a model folder (no config.json)")
        for key, value, low in (("batch_size", config.batch_size, 1), ("max_seq_length", config.max_seq_length, 16),
                                ("chunk_words", config.chunk_words, 10), ("hard_negatives", config.hard_negatives, 0),
                                ("drafting.questions_per_passage", config.drafting.questions_per_passage, 1),
                                ("drafting.max_new_tokens", config.drafting.max_new_tokens, 8)):
            if value < low:
                errors.append(f"{key}: must be at least {low}")
        if config.kind == "cross-encoder" and config.hard_negatives < 1:
            errors.append("hard_negatives: the cross-encoder needs at least 1 (they are its label-0 examples)")
        for key in ("epochs", "learning_rate"):
            if getattr(config, key) <= 0:
                errors.append(f"{key}: must be above 0")
        for key in ("warmup_ratio", "validation_fraction"):
            if not 0 <= getattr(config, key) < 1:
                errors.append(f"{key}: must be in [0, 1)")
    _raise(path, errors)
    return config
