"""Typed settings of a variant: one base model + prompt + context + adapter + generation settings.

Defaults live in the dataclasses below. A YAML file only sets values; ``--set key=value`` on the command
line overrides the file. Unknown keys and wrong types are rejected at once, every problem in one message,
before any model is loaded (the reading and type checks are in ``settings_reader.py``; training and DPO
settings in ``training/config.py``).

A variant has a stable hash over everything that changes what the model sees or says (not its display
name), so that evaluation caches, feedback rows and reports can name a configuration exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from assistant.artifacts import fingerprint
from assistant.settings_reader import ConfigError, FileSettings, build_settings, setting_docs

EMBEDDED_BASE = "smollm2-135m-instruct"


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
    """JSONL file of examples shown to the model before the real conversation, in any documented row format
    (chat messages, prompt/completion, or text/label)."""
    few_shot_count: int = 0
    """How many of those examples to include."""
    few_shot_selection: Literal["first", "balanced", "dynamic"] = "first"
    """Which examples: 'first': the first N of the file; 'balanced': taken in turn from each distinct answer
    (each label, for a classifier), in the file's order; 'dynamic': for every request, the N whose question is
    most like the user's, found by context.retriever over the file's questions (point few_shot at the
    training data)."""


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
    min_relevance: float | None = None
    """Abstain when no passage is at least this relevant to the question: the bot answers with
    prompt.variables.abstention without asking the model. Relevance is the best passage's cosine similarity
    (dense and hybrid retrievers, 0 to 1) or BM25 score (bm25). None: never abstain before the model."""
    embedder: str | None = None
    """Folder of a sentence-embedding model trained on the domain (``assistant train-retriever``) for the dense
    and hybrid retrievers; none: the packaged all-MiniLM-L6-v2. Its weights count in the variant hash."""
    conversations: str | None = None
    """JSONL file of past conversations whose rows name their ``source`` document (the training data): the
    past questions most like the user's vote for their documents, and those documents' passages rank first.
    None: the documents alone decide."""
    conversations_k: int = 5
    """How many of the most similar past questions vote (with context.conversations)."""
    rerank: str | None = None
    """Folder of a cross-encoder trained on the domain (``assistant train-retriever`` with kind cross-encoder)
    that re-scores the first context.rerank_candidates passages for the question; none: no reranking."""
    rerank_candidates: int = 20
    """Passages the reranker re-scores (with context.rerank)."""
    expand: Literal["passage", "section", "document"] = "passage"
    """What the model is shown for a retrieved passage: the passage itself, its whole section, or its whole
    document, when that fits context.max_words (else the passage alone). A document or section already shown
    is not shown twice."""
    max_words: int | None = None
    """Words the shown passages may hold together: they are taken in rank order, at most context.top_k of
    them, while they fit. None: the top context.top_k passages, however long."""


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
    verify: Literal["off", "drop", "retry", "abstain"] = "off"
    """Check each answer before it is shown: its checkable facts (amounts, durations, dates, counts, names...)
    against what the model was shown (the passages, the persona, the conversation). 'off': no check; 'drop':
    remove the sentences stating a fact found nowhere there (every one removed: say prompt.variables.abstention,
    else a fixed sentence); 'retry': ask once more, greedily, saying what was not in the passages, keep the
    answer with fewer unsupported facts, then drop; 'abstain': say the abstention text when any fact is
    unsupported. A streamed answer is checked when it ends, and the chat then replaces it."""


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
    prompt_cache_mib: int = 0
    """Memory llama.cpp may keep finished prompts' KV state in, so that a returning conversation skips its
    prefill (MiB; 0: none). About 11 MiB per 500-token prompt on the embedded base; the server's memory grows
    until this is full (llama.cpp's own default is 8192)."""
    url: str | None = None
    """Base URL of the OpenAI-compatible server for engine 'openai', e.g. http://127.0.0.1:8000/v1."""
    model_name: str | None = None
    """Model name to ask that server for. Default: the adapter folder's name, else the base's name."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding that server's API key (unset: no key is sent)."""
    tensor_parallel_size: int = 1
    """GPUs vLLM splits the model over."""


@dataclass
class Variant(FileSettings):
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

    def variant_hash(self) -> str:
        """12 hex digits over every setting except the name; equal settings give equal hashes.

        Files a setting points to (documents, adapter weights, few-shot examples, the template) count by
        their content, not by how their path is spelled: the same variant written relative to another
        folder (a report's winner.yaml, an adapter's variant.yaml) keeps its hash, and editing a document
        or retraining an adapter changes it. How answers are generated (the engine) is not part of it.
        """
        canonical = json.dumps(self._hashed_settings(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def hash_parts(self) -> dict[str, str]:
        """What the hash is made of, one short digest per part, so that a changed hash can say what changed:
        'settings' (every plain setting), 'template', 'documents', 'few_shot' and 'weights' (the adapter)."""
        data = self._hashed_settings()
        m, p, c = data["model"], data["prompt"], data["context"]
        parts = {"template": p.pop("template"), "documents": c.pop("documents") or "none",
                 "few_shot": p.pop("few_shot") or "none", "weights": m.pop("adapter") or "none"}
        settings = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return {"settings": hashlib.sha256(settings.encode()).hexdigest()[:12], **parts}

    def _hashed_settings(self) -> dict[str, Any]:
        """The settings the hash covers, with every file replaced by its content fingerprint."""
        data = self.to_dict()
        data.pop("name")
        data.pop("serving")  # how answers are generated, not what the model is asked
        for section, key in ADDED_SETTINGS:  # at their default, they leave earlier variants' hashes as they were
            if data[section][key] == getattr(type(getattr(self, section))(), key):
                del data[section][key]
        m, p, c = data["model"], data["prompt"], data["context"]
        if m["adapter"]:
            m["adapter"] = fingerprint(self.resolve(m["adapter"]), suffixes=(".safetensors", ".bin"))
        if p["few_shot"]:
            p["few_shot"] = fingerprint(self.resolve(p["few_shot"]))
        if c["documents"]:
            c["documents"] = fingerprint(self.resolve(c["documents"]))
        for key in ("embedder", "rerank"):  # model folders: by their weights
            if c.get(key):
                c[key] = fingerprint(self.resolve(c[key]), suffixes=(".safetensors", ".bin"))
        if c.get("conversations"):
            c["conversations"] = fingerprint(self.resolve(c["conversations"]))
        p["template"] = _template_identity(self)
        return data

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


ADDED_SETTINGS = [("context", "min_relevance"), ("prompt", "few_shot_selection"), ("context", "embedder"),
                  ("context", "conversations"), ("context", "conversations_k"), ("context", "rerank"),
                  ("context", "rerank_candidates"), ("context", "expand"), ("context", "max_words"),
                  ("generation", "verify")]
"""Settings added after variants were first hashed: left out of the hash while at their default, so that
every variant written before them (reports' winners, adapters' variant files, feedback rows) keeps its hash."""


def _template_identity(variant: Variant) -> str:
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
    for key in ("embedder", "conversations", "rerank"):
        data["context"][key] = rel(getattr(variant.context, key))
    data["serving"]["gguf"] = rel(variant.serving.gguf)
    # a template found next to the variant (or given absolute) is a path; one only in prompts/ is a name
    if variant.resolve(variant.prompt.template).is_file():
        data["prompt"]["template"] = rel(variant.prompt.template)
    return data


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
# Loading: dict -> Variant, every problem at once.


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
    variant = build_settings(Variant, data, "", errors)
    variant.root = str(Path(root).resolve())
    if not errors:
        errors.extend(_check_ranges(variant))
    if errors:
        raise ConfigError(f"{source}: {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    return variant


_RANGES = [  # (setting, lowest allowed value, what to say)
    ("generation.max_new_tokens", 1, "must be at least 1"),
    ("generation.temperature", 0, "must be 0 or more"),
    ("context.top_k", 1, "must be at least 1"),
    ("context.chunk_words", 10, "must be at least 10"),
    ("context.conversations_k", 1, "must be at least 1"),
    ("context.rerank_candidates", 1, "must be at least 1"),
    ("prompt.few_shot_count", 0, "must be 0 or more"),
    ("serving.parallel", 1, "must be at least 1"),
    ("serving.threads", 0, "must be 0 (every core) or more"),
    ("serving.context_tokens", 256, "must be at least 256"),
    ("serving.prompt_cache_mib", 0, "must be 0 (none) or more"),
]


def _check_ranges(v: Variant) -> list[str]:
    problems = []
    for key, lowest, message in _RANGES:
        section, name = key.split(".")
        if getattr(getattr(v, section), name) < lowest:
            problems.append(f"{key}: {message}")
    if not 0 < v.generation.top_p <= 1:
        problems.append("generation.top_p: must be in (0, 1]")
    if v.prompt.few_shot_count and not v.prompt.few_shot:
        problems.append("prompt.few_shot_count: set prompt.few_shot to the examples file too")
    if v.context.min_relevance is not None:
        if not v.context.documents:
            problems.append("context.min_relevance: needs context.documents (there is nothing to be relevant)")
        if not str(v.prompt.variables.get("abstention", "")).strip():
            problems.append("context.min_relevance: set prompt.variables.abstention to what the bot says when it "
                            "abstains")
    for key in ("conversations", "rerank", "embedder"):
        if getattr(v.context, key) and not v.context.documents:
            problems.append(f"context.{key}: needs context.documents (it ranks their passages)")
    if v.context.max_words is not None and v.context.max_words < 10:
        problems.append("context.max_words: must be at least 10, or none")
    if v.serving.engine == "openai" and not v.serving.url:
        problems.append("serving.url: engine 'openai' needs the server's base URL, e.g. http://127.0.0.1:8000/v1")
    return problems
