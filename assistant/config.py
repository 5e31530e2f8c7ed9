"""Typed settings for a variant: one base model + prompt + context + adapter + generation settings.

Defaults live in the dataclasses below. A YAML file only sets values; ``--set key=value`` on the command
line overrides the file. Unknown keys and wrong types are rejected at once, every problem in one message,
before any model is loaded.

A variant has a stable hash over everything that changes what the model sees or says (not its display
name), so that evaluation caches, feedback rows and reports can name a configuration exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

EMBEDDED_BASE = "smollm2-135m-instruct"


class ConfigError(ValueError):
    """A user error in a settings file or override: the message names every problem."""


@dataclass
class ModelSettings:
    base: str = EMBEDDED_BASE
    """Base model: the embedded default 'smollm2-135m-instruct', a Hugging Face model id, or a local folder."""
    quantization: Literal["nf4", "none"] = "nf4"
    """'nf4': bitsandbytes 4-bit NF4 weights with double quantization; 'none': full weights."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Compute dtype. 'auto' is bfloat16 on CUDA and float32 on the CPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the model runs. 'auto' picks CUDA when a GPU is present."""
    adapter: str | None = None
    """Folder of a LoRA adapter to apply on the base, or none for the prompt-only variant."""
    trust_remote_code: bool = False
    """Run model code shipped with a hub model. Off unless you trust its author."""


@dataclass
class PromptSettings:
    template: str = "plain.j2"
    """Jinja template in prompts/ (or a path to one) that yields the message list."""
    variables: dict[str, str] = field(default_factory=dict)
    """Values the template uses, such as persona, tone and company."""
    few_shot: str | None = None
    """JSONL file of example conversations shown to the model before the real one."""
    few_shot_count: int = 0
    """How many of those examples to include (the first N)."""


@dataclass
class ContextSettings:
    documents: str | None = None
    """Folder of Markdown or text documents to retrieve passages from; none turns retrieval off."""
    retriever: Literal["bm25", "dense", "hybrid"] = "bm25"
    """'bm25': keyword match; 'dense': sentence embeddings (all-MiniLM-L6-v2); 'hybrid': both, fused by rank."""
    top_k: int = 3
    """Passages retrieved for each user message."""
    chunk_words: int = 120
    """Largest passage, in words; longer sections are split at paragraph breaks."""
    context_window: int | None = None
    """Token budget of the whole prompt plus answer; defaults to the model's own maximum, capped at 4096."""


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    """Longest answer in tokens; also reserved out of the context window."""
    temperature: float = 0.0
    """0 means greedy decoding (deterministic); above 0 samples."""
    top_p: float = 1.0
    """Nucleus sampling threshold, used when temperature > 0."""
    repetition_penalty: float = 1.0
    """Above 1.0 discourages repeating tokens."""
    seed: int = 0
    """Random seed for sampling."""


ENGINES = ("auto", "transformers", "llamacpp", "openai", "vllm")


@dataclass
class ServingSettings:
    """How answers are generated. Not part of the variant hash: every engine sees the same rendered prompt,
    token for token; evaluation records the engine with each cached answer and names it in the report."""

    engine: Literal["auto", "transformers", "llamacpp", "openai", "vllm"] = "auto"
    """'auto': vllm on a CUDA GPU when installed, else llamacpp on the CPU when the base has a GGUF, else
    transformers. 'llamacpp': llama.cpp in process (continuous batching, adapters chosen per request; runs the
    GGUF weights). 'openai': any OpenAI-compatible server at 'url'. 'vllm': vLLM in process (GPU)."""
    gguf: str | None = None
    """GGUF file of the base for llamacpp. Default: the embedded model's own GGUF, else one written once into
    the cache from the base's safetensors (Llama-architecture models; others: llama.cpp's converter)."""
    gguf_type: Literal["q8_0", "f16", "f32"] = "q8_0"
    """Weight type of a base GGUF written into the cache."""
    threads: int = 0
    """CPU threads for llama.cpp; 0: every core this process may use."""
    parallel: int = 4
    """Requests llama.cpp or vLLM decode at once (continuous batching); more wait in line."""
    context_tokens: int = 8192
    """KV-cache size of llama.cpp, in tokens, shared by the parallel requests."""
    url: str | None = None
    """Base URL of the OpenAI-compatible server for engine 'openai', e.g. http://127.0.0.1:8000/v1."""
    model_name: str | None = None
    """Model name to ask that server for. Default: the adapter folder's name, else the base's name."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding that server's API key (unset: no key is sent)."""
    tensor_parallel_size: int = 1
    """GPUs vLLM splits the model over."""


@dataclass
class Variant:
    name: str = "default"
    """Display name; not part of the hash."""
    model: ModelSettings = field(default_factory=ModelSettings)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    context: ContextSettings = field(default_factory=ContextSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    root: str = "."
    """Folder that relative paths in this variant are resolved against (the variant file's folder).
    Set by the loader, not by the file; not part of the hash, so a checkout moved elsewhere keeps it."""

    def resolve(self, value: str) -> Path:
        """Turns a path written in the variant into a path on this machine."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else (Path(self.root) / path).resolve()

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("root")
        return data

    def variant_hash(self) -> str:
        """12 hex digits over every setting except the name; equal settings give equal hashes.

        Files a setting points to (documents, adapter weights, few-shot examples, the template) count by
        their content, not by how their path is spelled: the same variant written relative to another
        folder (a report's winner.yaml, an adapter's variant.yaml) keeps its hash, and editing a document
        or retraining an adapter changes it.
        """
        data = self.to_dict()
        data.pop("name")
        data.pop("serving")  # how answers are generated, not what the model is asked
        m, p, c = data["model"], data["prompt"], data["context"]
        if m["adapter"]:
            m["adapter"] = content_digest(self.resolve(m["adapter"]), suffixes=(".safetensors", ".bin"))
        if p["few_shot"]:
            p["few_shot"] = content_digest(self.resolve(p["few_shot"]))
        if c["documents"]:
            c["documents"] = content_digest(self.resolve(c["documents"]))
        p["template"] = _template_identity(self)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_DIGESTS: dict[tuple, str] = {}


def content_digest(path: Path, suffixes: tuple[str, ...] | None = None) -> str:
    """sha256 of a file, or of a folder's files (relative names and bytes; hidden files skipped; only the
    given suffixes when set). Memoised per process by size and modification time. A missing path gives
    'missing:<name>', so a hash can still be computed (and the variant's check reports the path)."""
    if not path.exists():
        return f"missing:{path.name}"
    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*")
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)
        and (suffixes is None or f.suffix in suffixes))
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        key = (str(f.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _DIGESTS:
            _DIGESTS[key] = hashlib.sha256(f.read_bytes()).hexdigest()
        digest.update(f"{f.relative_to(path) if f != path else ''}:{_DIGESTS[key]}\n".encode())
    return digest.hexdigest()[:16]


def _template_identity(variant: "Variant") -> str:
    """The template's content hash when it can be found, else its name as written."""
    from assistant.prompts import PromptError, find_template

    try:
        return find_template(variant.prompt.template, [Path(variant.root)]).content_hash
    except PromptError:
        return variant.prompt.template


def portable_variant(variant: Variant, folder: Path) -> dict[str, Any]:
    """The variant's settings with every local path rewritten relative to ``folder``, so the file still
    works where it is written (and when the checkout moves)."""
    data = variant.to_dict()

    def rel(value: str | None) -> str | None:
        if not value:
            return value
        return os.path.relpath(variant.resolve(value), folder.resolve())

    data["model"]["adapter"] = rel(variant.model.adapter)
    data["prompt"]["few_shot"] = rel(variant.prompt.few_shot)
    data["context"]["documents"] = rel(variant.context.documents)
    data["serving"]["gguf"] = rel(variant.serving.gguf)
    # a template found next to the variant (or given absolute) is a path; one only in prompts/ is a name
    if variant.resolve(variant.prompt.template).is_file():
        data["prompt"]["template"] = rel(variant.prompt.template)
    return data


def setting_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a settings dataclass (the string right under each field)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def commented_yaml(variant: Variant) -> str:
    """The variant as YAML with each setting's description as a comment above it."""
    import yaml

    lines = [f"# variant hash {variant.variant_hash()}"]
    top_docs = setting_docs(Variant)
    for f in dataclasses.fields(variant):
        if f.name == "root":
            continue
        value = getattr(variant, f.name)
        if not dataclasses.is_dataclass(value):
            lines += [f"# {top_docs.get(f.name, '')}", yaml.safe_dump({f.name: value}).rstrip()]
            continue
        lines.append(f"{f.name}:")
        docs = setting_docs(type(value))
        for inner in dataclasses.fields(value):
            lines.append(f"  # {docs.get(inner.name, '')}")
            dumped = yaml.safe_dump({inner.name: getattr(value, inner.name)}, default_flow_style=False).rstrip()
            lines += ["  " + line for line in dumped.splitlines()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Loading: dict -> dataclass with type checks that collect every error.


def _check_value(value: Any, annotation: Any, where: str, errors: list[str]) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(value, inner[0], where, errors)
    if origin is Literal:
        if value not in args:
            errors.append(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list, got {type(value).__name__}")
            return value
        return [_check_value(item, args[0], f"{where}[{i}]", errors) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            errors.append(f"{where}: expected a mapping of names to text, got {type(value).__name__}")
            return value
        return {k: str(v) for k, v in value.items()}
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where, errors)
    if annotation is bool:
        if not isinstance(value, bool):
            errors.append(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):
            # YAML 1.1 reads '1e-4' (no dot) as text; accept any number written that way.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{where}: expected a number, got {value!r}")
            return value
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            errors.append(f"{where}: expected text, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} at {where}")


def _build(cls: type, data: Any, where: str, errors: list[str]) -> Any:
    if not isinstance(data, dict):
        errors.append(f"{where or 'top level'}: expected a mapping, got {type(data).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            errors.append(f"{where + '.' if where else ''}{key}: unknown setting (known: {', '.join(names)})")
    values = {}
    for name in names:
        if name in data:
            values[name] = _check_value(data[name], hints[name], f"{where + '.' if where else ''}{name}", errors)
    return cls(**values)


def variant_from_dict(data: dict[str, Any], source: str = "<settings>", root: str | Path = ".") -> Variant:
    """Builds a Variant from plain data, rejecting unknown keys and wrong types.

    Args:
        data: nested mapping as read from YAML.
        source: file name used in error messages.
        root: folder that relative paths in the settings are resolved against.

    Raises:
        ConfigError: listing every problem found.
    """
    errors: list[str] = []
    if isinstance(data, dict) and "root" in data:
        errors.append("root: set by the loader from the file's location, not in the file")
        data = {k: v for k, v in data.items() if k != "root"}
    variant = _build(Variant, data, "", errors)
    variant.root = str(Path(root).resolve())
    if not errors:
        errors.extend(_check_ranges(variant))
    if errors:
        raise ConfigError(f"{source}: {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    return variant


def _check_ranges(v: Variant) -> list[str]:
    problems = []
    if v.generation.max_new_tokens < 1:
        problems.append("generation.max_new_tokens: must be at least 1")
    if v.generation.temperature < 0:
        problems.append("generation.temperature: must be 0 or more")
    if not 0 < v.generation.top_p <= 1:
        problems.append("generation.top_p: must be in (0, 1]")
    if v.context.top_k < 1:
        problems.append("context.top_k: must be at least 1")
    if v.context.chunk_words < 10:
        problems.append("context.chunk_words: must be at least 10")
    if v.prompt.few_shot_count < 0:
        problems.append("prompt.few_shot_count: must be 0 or more")
    if v.prompt.few_shot_count and not v.prompt.few_shot:
        problems.append("prompt.few_shot_count: set prompt.few_shot to the examples file too")
    if v.serving.parallel < 1:
        problems.append("serving.parallel: must be at least 1")
    if v.serving.threads < 0:
        problems.append("serving.threads: must be 0 (every core) or more")
    if v.serving.context_tokens < 256:
        problems.append("serving.context_tokens: must be at least 256")
    if v.serving.engine == "openai" and not v.serving.url:
        problems.append("serving.url: engine 'openai' needs the server's base URL, e.g. http://127.0.0.1:8000/v1")
    return problems


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parses 'generation.max_new_tokens=64' into (['generation', 'max_new_tokens'], 64) with YAML typing."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, for example generation.max_new_tokens=64")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Returns a copy of ``data`` with each KEY=VALUE override set (nested keys by dots)."""
    data = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a section")
        node[path[-1]] = value
    return data


def read_settings_file(path: Path, what: str) -> dict[str, Any]:
    """Reads a YAML settings file; a syntax error names the file and line."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"{path}: no such {what}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def load_variant(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Variant:
    """Reads a variant YAML file (or the defaults when ``path`` is None) and applies overrides.

    Relative paths inside the file (documents, adapter, few-shot examples, a template given as a path)
    are resolved against the file's folder (``Variant.resolve``), so a variant works from any working
    directory.
    """
    data: dict[str, Any] = {}
    source = "<defaults>"
    root = Path.cwd()
    if path is not None:
        path = Path(path)
        source = str(path)
        data = read_settings_file(path, "variant file")
        data.setdefault("name", path.stem)
        root = path.parent
    data = apply_overrides(data, list(overrides))
    return variant_from_dict(data, source, root)


# ---------------------------------------------------------------------------------------------------------
# Training: what `assistant train CONFIG.yaml` reads.

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
    """Longest example in tokens (rendered prompt + answer); longer ones are a data error."""
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
class TrainConfig:
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

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (Path(self.root) / path).resolve()

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("root")
        return data


def load_train_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Reads a training YAML file and applies KEY=VALUE overrides; every problem reported at once."""
    path = Path(path)
    data = read_settings_file(path, "training config")
    data = apply_overrides(data, list(overrides))
    errors: list[str] = []
    data.pop("root", None)
    config = _build(TrainConfig, data, "", errors)
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
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", config.name):
            errors.append(f"name: {config.name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    if errors:
        raise ConfigError(f"{path}: {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    return config
