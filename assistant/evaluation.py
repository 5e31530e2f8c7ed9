"""Side-by-side evaluation: every variant of a suite answers every held-out case, and is scored.

    suite.yaml -> cases (JSONL) + variants (prompt x context x adapter x generation settings)
               -> answers, batched, cached on disk by (variant hash, case hash, weights hash)
               -> perplexity of each reference under each variant
               -> metrics (evaluate modules in eval/metrics/), optional pairwise judge
               -> statistics (bootstrap intervals, paired tests) -> report + winner.yaml

A suite is checked completely (files, variant fields, every case) before any model loads, and every
problem names its file and line.

Suite file (paths relative to it)::

    name: tidewater-support
    cases: ../../data/tidewater/eval.jsonl
    metrics: [rouge_l, chrf, bleu, semantic_similarity, perplexity]
    primary: rouge_l
    secondary: semantic_similarity
    variants:
      - file: ../../configs/tidewater.yaml     # a variant file...
        name: prompt+retrieval
        set: {context.top_k: 3}                  # ...with overrides
      - name: bare                               # ...or settings written inline
        prompt: {template: plain.j2}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from assistant.config import ConfigError, Variant, apply_overrides, read_settings_file, variant_from_dict
from assistant.data import jsonl_rows

LABEL_METRICS = ("accuracy", "macro_f1")
DEFAULT_METRICS = ["rouge_l", "chrf", "bleu", "exact_match", "semantic_similarity", "perplexity"]
SUITE_FIELDS = {
    "name": "Suite name; reports are written to <reports>/<name>-<timestamp>/.",
    "cases": "JSONL file of cases: 'messages' (or 'question'), 'reference', optional 'id', 'label', 'tags'.",
    "variants": "List of variants: 'file' (a variant YAML) with optional 'name' and 'set' overrides, or inline settings.",
    "metrics": f"Metrics to compute (default: {', '.join(DEFAULT_METRICS)}; accuracy/macro_f1 when cases have labels).",
    "primary": "Metric that picks the winner.",
    "secondary": "Metric that breaks ties on the primary metric (then speed breaks ties).",
    "labels": "Label set for accuracy/macro-F1 (default: the labels seen in the cases).",
    "batch_size": "Cases generated together (left padding).",
    "limit": "Use only the first N cases (a quick look; the report says so).",
    "judge": "Optional pairwise judge: {variant: NAME or file} or {endpoint: URL, model: NAME}; 'baseline' names the variant every other is compared with.",
    "reports": "Folder for reports (default: eval/reports next to the suite's folder).",
    "serve": "Whether the app may serve this suite's winner by default (false for classifiers).",
    "bootstrap_rounds": "Resamples for confidence intervals and paired tests.",
    "cost_probe": "Cases answered one at a time, streamed, to time the first token.",
}


class SuiteError(ConfigError):
    """A problem in a suite or its cases; the message names the file and line."""


# -- reading a suite -------------------------------------------------------------------------------------


class _Mapping(dict):
    """A YAML mapping that remembers the line of each key (1-based) and its own line."""

    line: int = 0
    key_lines: dict


def _read_yaml_with_lines(path: Path) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        loader.flatten_mapping(node)
        mapping = _Mapping()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            mapping[key] = loader.construct_object(value_node, deep=True)
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    read_settings_file(path, "suite file")  # the plain read reports syntax errors with their line
    return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)


def _plain(data: Any) -> Any:
    return json.loads(json.dumps(data))


@dataclass
class Case:
    id: str
    where: str
    """'file:line' of the case."""
    messages: list[dict[str, str]]
    """The conversation so far, ending with the user message to answer."""
    reference: str
    label: str | None = None
    tags: list[str] = field(default_factory=list)

    def case_hash(self) -> str:
        canonical = json.dumps({"messages": self.messages, "reference": self.reference}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def read_cases(path: Path) -> list[Case]:
    """Reads evaluation cases, reporting every bad row with its line."""
    if not path.is_file():
        raise SuiteError(f"{path}: no such cases file")
    cases: list[Case] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for where, number, row, problem in jsonl_rows(path):
        if problem is None:
            case, problem = _case(row, where, number)
        if problem is None and case.id in seen:
            problem = f"id {case.id!r} is used already at {seen[case.id]}"
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        seen[case.id] = where
        cases.append(case)
    if not cases and not problems:
        problems.append(f"{path}: no cases")
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise SuiteError(f"{len(problems)} problem(s) in the cases:\n  " + "\n  ".join(shown))
    return cases


def _case(row: Any, where: str, number: int) -> tuple[Case | None, str | None]:
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            return None, "'messages' must be a non-empty list"
        for i, m in enumerate(messages, 1):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                return None, f"message {i} needs a role of system, user or assistant"
            if not isinstance(m.get("content"), str) or not m["content"].strip():
                return None, f"message {i} has no text content"
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        if messages[-1]["role"] != "user":
            return None, "the conversation must end with the user message to be answered"
    elif "question" in row:
        if not isinstance(row["question"], str) or not row["question"].strip():
            return None, "'question' must be non-empty text"
        messages = [{"role": "user", "content": row["question"]}]
    else:
        return None, "a case needs 'messages' or 'question'"
    reference = row.get("reference")
    if not isinstance(reference, str) or not reference.strip():
        return None, "a case needs a non-empty 'reference' answer"
    label = row.get("label")
    if label is not None and not isinstance(label, (str, int)):
        return None, "'label' must be text"
    tags = row.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return None, "'tags' must be a list of strings"
    return Case(str(row.get("id", f"line-{number}")), where, messages, reference,
                None if label is None else str(label), tags), None


@dataclass
class SuiteVariant:
    name: str
    variant: Variant
    where: str


@dataclass
class JudgeSettings:
    baseline: str
    variant: SuiteVariant | None = None
    endpoint: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"

    def identity(self) -> str:
        if self.variant is not None:
            return f"variant:{self.variant.variant.variant_hash()}"
        return f"endpoint:{self.endpoint}:{self.model}"


@dataclass
class Suite:
    name: str
    path: Path
    cases_file: Path
    cases: list[Case]
    variants: list[SuiteVariant]
    metrics: list[str]
    primary: str
    secondary: str | None
    labels: list[str]
    batch_size: int = 8
    limit: int | None = None
    judge: JudgeSettings | None = None
    reports: Path = Path("eval/reports")
    serve: bool = True
    bootstrap_rounds: int = 2000
    cost_probe: int = 3

    def variant(self, name: str) -> SuiteVariant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)


def load_suite(path: str | Path, only: Iterable[str] = (), limit: int | None = None) -> Suite:
    """Reads and checks a suite: its fields, every variant, every case. Loads no model.

    Args:
        only: keep just these variant names (all when empty).
        limit: use only the first N cases (overrides the suite's own ``limit``).

    Raises:
        SuiteError: naming the file and line of each problem found.
    """
    from assistant.context import load_documents
    from assistant.generate import Bot
    from assistant.metrics import available_metrics

    path = Path(path)
    data = _read_yaml_with_lines(path)
    if not isinstance(data, _Mapping):
        raise SuiteError(f"{path}: expected a mapping of suite settings at the top level")
    root = path.resolve().parent
    problems: list[str] = []

    def at(mapping: Any, key: str | None = None) -> str:
        line = getattr(mapping, "key_lines", {}).get(key) if key else getattr(mapping, "line", None)
        return f"{path}:{line or getattr(mapping, 'line', 1)}"

    for key in data:
        if key not in SUITE_FIELDS:
            problems.append(f"{at(data, key)}: unknown suite field {key!r} (known: {', '.join(SUITE_FIELDS)})")

    name = data.get("name") or path.stem
    cases_value = data.get("cases")
    if not isinstance(cases_value, str):
        problems.append(f"{at(data, 'cases') if 'cases' in data else at(data)}: 'cases' must name a JSONL file")
        cases_file = None
    else:
        cases_file = (root / cases_value).resolve()
        if not cases_file.is_file():
            problems.append(f"{at(data, 'cases')}: cases file {cases_file} does not exist")

    # variants
    variants: list[SuiteVariant] = []
    entries = data.get("variants")
    if not isinstance(entries, list) or not entries:
        problems.append(f"{at(data, 'variants') if 'variants' in data else at(data)}: 'variants' must be a non-empty list")
        entries = []
    for number, entry in enumerate(entries, 1):
        where = at(entry) if isinstance(entry, _Mapping) else f"{path}"
        try:
            variants.append(_suite_variant(entry, number, where, root))
        except ConfigError as exc:
            problems.append(f"{where}: variant {number}: {exc}")
    names = [v.name for v in variants]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{path}: two variants are named {dup!r}; give each a distinct 'name'")
    only = list(only)
    for wanted in only:
        if wanted not in names:
            problems.append(f"--variants: no variant named {wanted!r} in {path} (have: {', '.join(names)})")

    # the parts of each variant that can be checked without a model: template, examples, documents
    # (read and cut into passages, not embedded: no model of any kind loads before the suite is valid)
    for v in variants:
        try:
            bot = Bot(v.variant)
            _ = bot.template, bot.examples
            if v.variant.context.documents:
                load_documents(v.variant.resolve(v.variant.context.documents), v.variant.context.chunk_words)
        except Exception as exc:  # PromptError, ContextError, OSError: all user errors here
            problems.append(f"{v.where}: variant {v.name!r}: {exc}")

    cases: list[Case] = []
    if cases_file is not None and cases_file.is_file():
        try:
            cases = read_cases(cases_file)
        except SuiteError as exc:
            problems.append(str(exc))
    limit = limit if limit is not None else data.get("limit")
    if limit is not None:
        if not isinstance(limit, int) or limit < 1:
            problems.append(f"{at(data, 'limit')}: 'limit' must be a positive whole number")
        else:
            cases = cases[:limit]

    labels = data.get("labels") or sorted({c.label for c in cases if c.label is not None})
    metrics = data.get("metrics") or DEFAULT_METRICS + (list(LABEL_METRICS) if labels else [])
    known = available_metrics()
    if not isinstance(metrics, list):
        problems.append(f"{at(data, 'metrics')}: 'metrics' must be a list")
        metrics = []
    for metric in metrics:
        if metric not in known:
            problems.append(f"{at(data, 'metrics')}: unknown metric {metric!r} (available: {', '.join(known)})")
    if any(m in LABEL_METRICS for m in metrics) and cases and not all(c.label for c in cases):
        missing = next(c for c in cases if not c.label)
        problems.append(f"{missing.where}: label metrics are requested but this case has no 'label'")
    primary = data.get("primary") or (metrics[0] if metrics else "")
    secondary = data.get("secondary")
    for key, value in (("primary", primary), ("secondary", secondary)):
        if value is not None and value not in metrics:
            problems.append(f"{at(data, key) if key in data else at(data)}: {key} metric {value!r} is not among "
                            f"the suite's metrics ({', '.join(metrics)})")

    judge = None
    if data.get("judge") is not None:
        try:
            judge = _judge(data["judge"], variants, root, at(data, "judge"))
        except ConfigError as exc:
            problems.append(str(exc))

    numbers = {}
    for key, default, lowest in (("batch_size", 8, 1), ("bootstrap_rounds", 2000, 100), ("cost_probe", 3, 0)):
        value = data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            problems.append(f"{at(data, key)}: {key!r} must be a whole number of at least {lowest}")
        numbers[key] = value

    if problems:
        raise SuiteError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    if only:
        variants = [v for v in variants if v.name in only]
    reports = (root / data["reports"]).resolve() if data.get("reports") else _default_reports(root)
    return Suite(name, path.resolve(), cases_file, cases, variants, metrics, primary, secondary, labels,
                 numbers["batch_size"], limit, judge, reports, bool(data.get("serve", True)),
                 numbers["bootstrap_rounds"], numbers["cost_probe"])


def _default_reports(root: Path) -> Path:
    """eval/reports of the project the suite lives in (the suite's folder or a parent with eval/)."""
    for folder in [root, *root.parents]:
        if (folder / "eval").is_dir() and folder.name != "eval":
            return folder / "eval" / "reports"
        if folder.name == "eval":
            return folder / "reports"
    return root / "reports"


def _suite_variant(entry: Any, number: int, where: str, root: Path) -> SuiteVariant:
    if not isinstance(entry, dict):
        raise ConfigError("expected a mapping with 'file' (and optional 'name', 'set') or inline settings")
    entry = _plain(entry)
    overrides = entry.pop("set", None) or {}
    if not isinstance(overrides, dict):
        raise ConfigError("'set' must map dotted keys to values, e.g. {context.top_k: 5}")
    if "file" in entry:
        file = (root / entry.pop("file")).resolve()
        name = entry.pop("name", None)
        if entry:
            raise ConfigError(f"with 'file', only 'name' and 'set' may be given (found {', '.join(entry)})")
        settings = read_settings_file(file, "variant file")
        source, variant_root = str(file), file.parent
    else:
        settings, name = entry, entry.get("name")
        source, variant_root = where, root
    settings = apply_overrides(settings, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    settings["name"] = str(name or settings.get("name") or f"variant-{number}")
    variant = variant_from_dict(settings, source, root=variant_root)
    return SuiteVariant(variant.name, variant, where)


def _judge(data: Any, variants: list[SuiteVariant], root: Path, where: str) -> JudgeSettings:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: 'judge' must be a mapping")
    data = _plain(data)
    allowed = {"variant", "endpoint", "model", "baseline", "api_key_env"}
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown judge field(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(allowed))})")
    baseline = data.get("baseline") or (variants[0].name if variants else "")
    if variants and baseline not in [v.name for v in variants]:
        raise ConfigError(f"{where}: judge baseline {baseline!r} is not a variant of this suite")
    if ("variant" in data) == ("endpoint" in data):
        raise ConfigError(f"{where}: the judge needs exactly one of 'variant' (a suite variant or a variant file) "
                          "or 'endpoint' (an OpenAI-compatible URL, with 'model')")
    if "endpoint" in data:
        if not data.get("model"):
            raise ConfigError(f"{where}: an endpoint judge needs 'model'")
        return JudgeSettings(baseline, None, data["endpoint"], data["model"], data.get("api_key_env", "OPENAI_API_KEY"))
    named = [v for v in variants if v.name == data["variant"]]
    if named:
        return JudgeSettings(baseline, named[0])
    file = (root / data["variant"]).resolve()
    settings = read_settings_file(file, "judge variant file")
    variant = variant_from_dict(settings, str(file), root=file.parent)
    return JudgeSettings(baseline, SuiteVariant(variant.name, variant, where))


# -- answering, with a disk cache -------------------------------------------------------------------------

_FINGERPRINTS_LOCK = threading.Lock()


def weights_fingerprint(variant: Variant) -> str:
    """Hash of the weights a variant runs: base weight files plus adapter weights (memoised on disk by
    path, size and modification time, so large files are read once)."""
    from assistant.models import resolve_base

    source = resolve_base(variant.model.base)
    parts = [_files_hash(Path(source.location)) if source.local else f"hub:{source.location}"]
    if variant.model.adapter:
        parts.append(_files_hash(variant.resolve(variant.model.adapter)))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _files_hash(folder: Path) -> str:
    from assistant.card import WEIGHT_SUFFIXES
    from assistant.models import cache_dir, file_sha256

    memo_path = cache_dir() / "fingerprints.json"
    with _FINGERPRINTS_LOCK:
        memo = json.loads(memo_path.read_text()) if memo_path.is_file() else {}
        digest = hashlib.sha256()
        for path in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES):
            stat = path.stat()
            key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
            if key not in memo:
                memo[key] = file_sha256(path)
            digest.update(f"{path.name}:{memo[key]}".encode())
        _write_json(memo_path, memo)
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    staging.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(staging, path)  # a reader never sees a half-written file


class AnswerCache:
    """One JSON file per (weights, variant, case): the answer, its timing and the reference's perplexity."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, weights: str, variant_hash: str, case_hash: str) -> Path:
        return self.root / weights / variant_hash / f"{case_hash}.json"

    def get(self, weights: str, variant_hash: str, case_hash: str) -> dict | None:
        path = self.path(weights, variant_hash, case_hash)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def put(self, weights: str, variant_hash: str, case_hash: str, record: dict) -> None:
        _write_json(self.path(weights, variant_hash, case_hash), record)


def default_cache() -> AnswerCache:
    from assistant.models import cache_dir

    return AnswerCache(cache_dir() / "eval")


class MemorySampler:
    """Peak memory while a block runs: CUDA's peak allocation, or else the process's peak resident set
    sampled every 10 ms (so the number belongs to that block, not to the whole process's lifetime)."""

    def __init__(self, device: str):
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            try:
                with open("/proc/self/statm") as handle:
                    self.peak = max(self.peak, int(handle.read().split()[1]) * page)
            except OSError:  # not Linux: no sampling
                return
            self._stop.wait(0.01)

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            import torch

            self.peak = int(torch.cuda.max_memory_allocated())
        else:
            self._stop.set()
            self._thread.join()


def reference_nll(bot, history: list[dict[str, str]], reference: str) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of the reference answer, and its token count, under the
    variant: the served prompt, then the reference as the model's reply (end-of-turn marker included)."""
    import torch

    from assistant.models import use_adapter
    from assistant.train import IGNORE, encode

    ids, labels = encode(bot, history, reference)
    base = bot.base
    with base.lock, use_adapter(base, bot.adapter_name) as model, torch.inference_mode():
        input_ids = torch.tensor([ids], device=model.device)
        logits = model(input_ids=input_ids).logits[0, :-1].float()
        target = torch.tensor(labels[1:], device=logits.device)
        keep = target != IGNORE
        nll = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
    return float(nll), int(keep.sum())


def first_token_seconds(bot, history: list[dict[str, str]]) -> float:
    """Seconds from the request to the first streamed piece of the answer (prompt building included);
    the stream is closed right after, which stops generation."""
    started = time.perf_counter()
    _, stream = bot.start(history)
    try:
        next(stream, None)
        return time.perf_counter() - started
    finally:
        stream.close()


@dataclass
class VariantRun:
    """One variant's answers to the suite's cases, with cost."""

    name: str
    variant: Variant
    variant_hash: str
    weights: str
    records: list[dict]
    """Per case: answer, new_tokens, prompt_tokens, seconds, nll, ref_tokens (in case order)."""
    cost: dict[str, Any]
    cached: int
    """How many answers came from the cache."""


def answer_cases(
    suite: Suite,
    sv: SuiteVariant,
    cache: AnswerCache | None,
    progress: Callable[[int], None] = lambda n: None,
    refresh: bool = False,
    engine: str | None = None,
) -> VariantRun:
    """Answers every case with one variant: cached answers are reused, the rest generated in batches.
    ``refresh`` answers every case again and replaces the cached answers and cost."""
    from assistant.generate import Bot

    variant = sv.variant
    bot = Bot(variant, engine)
    weights = weights_fingerprint(variant)
    # Answers are cached per engine: engines run the same prompt on slightly different weights and kernels
    # (llama.cpp runs the GGUF). transformers answers keep the key they had before there were engines.
    vhash = variant.variant_hash() + ("" if bot.engine_name == "transformers" else f"-{bot.engine_name}")
    records: list[dict | None] = [cache.get(weights, vhash, c.case_hash()) if cache and not refresh else None
                                  for c in suite.cases]
    cached = sum(r is not None for r in records)
    progress(cached)
    missing = [i for i, r in enumerate(records) if r is None]
    cost_path = cache.root / weights / vhash / "cost.json" if cache else None
    cost = json.loads(cost_path.read_text()) if cost_path and cost_path.is_file() else {}
    scored = "perplexity" in suite.metrics  # the reference's likelihood needs the PyTorch model
    device = bot.base.device if scored or bot.engine_name == "transformers" else (
        "cuda" if bot.engine_name == "vllm" else "cpu")
    if missing:
        generated_tokens, generated_seconds = 0, 0.0
        with MemorySampler(device) as memory:
            for start in range(0, len(missing), suite.batch_size):
                chunk = missing[start : start + suite.batch_size]
                replies = bot.reply_batch([suite.cases[i].messages for i in chunk], batch_size=len(chunk))
                generated_seconds += replies[0].seconds
                for i, reply in zip(chunk, replies):
                    case = suite.cases[i]
                    nll, ref_tokens = reference_nll(bot, case.messages, case.reference) if scored else (None, None)
                    record = {
                        "case": case.id,
                        "answer": reply.text,
                        "new_tokens": reply.new_tokens,
                        "prompt_tokens": reply.prompt_tokens,
                        "passages": [p.cite() for p in reply.passages],
                        "nll": nll,
                        "ref_tokens": ref_tokens,
                    }
                    generated_tokens += reply.new_tokens
                    records[i] = record
                    if cache:
                        cache.put(weights, vhash, case.case_hash(), record)
                progress(len(chunk))
            first_tokens = [first_token_seconds(bot, case.messages) for case in suite.cases[: suite.cost_probe]]
        cost = {
            "tokens_per_second": generated_tokens / generated_seconds if generated_seconds else math.nan,
            "batch_size": suite.batch_size,
            "first_token_seconds": sorted(first_tokens)[len(first_tokens) // 2] if first_tokens else math.nan,
            "peak_memory_bytes": memory.peak,
            "device": device,
            "engine": bot.engine_name,
            "measured_on_cases": len(missing),
        }
        if cost_path:
            _write_json(cost_path, cost)
    lengths = [r["new_tokens"] for r in records]
    cost = {**cost, "answer_tokens_mean": sum(lengths) / len(lengths) if lengths else math.nan}
    return VariantRun(sv.name, variant, vhash, weights, records, cost, cached)


# -- scoring ----------------------------------------------------------------------------------------------


def extract_label(answer: str, labels: list[str]) -> str:
    """The first label named in the answer (as a whole word, any case), or '' when none is."""
    text = answer.lower()
    best, best_at = "", len(text) + 1
    for label in labels:
        match = re.search(rf"(?<![\w-]){re.escape(label.lower())}(?![\w-])", text)
        if match and match.start() < best_at:
            best, best_at = label, match.start()
    return best


@dataclass
class MetricScores:
    """One metric for one variant: per-case values and the statistic that aggregates any subset."""

    name: str
    per_case: list[float]
    statistic: Callable
    estimate: Any = None
    extra: dict = field(default_factory=dict)


def score_run(suite: Suite, run: VariantRun) -> dict[str, MetricScores]:
    """Every metric of the suite for one variant's answers (metric modules from eval/metrics/)."""
    import numpy as np

    from assistant.metrics import load_metric
    from assistant.stats import bootstrap_ci, mean_of

    answers = [r["answer"] for r in run.records]
    references = [c.reference for c in suite.cases]
    out: dict[str, MetricScores] = {}
    for name in suite.metrics:
        module = load_metric(name)
        if name == "perplexity":
            nll = np.array([r["nll"] for r in run.records])
            tokens = np.array([r["ref_tokens"] for r in run.records])
            result = module.compute(nll=nll.tolist(), tokens=tokens.tolist())
            statistic = lambda idx, nll=nll, tokens=tokens: float(math.exp(nll[idx].sum() / tokens[idx].sum()))
        elif name in LABEL_METRICS:
            predicted = [extract_label(a, suite.labels) for a in answers]
            gold = [c.label for c in suite.cases]
            if name == "macro_f1":
                result = module.compute(predictions=predicted, references=gold, labels=suite.labels)
                statistic = _macro_f1_statistic(predicted, gold, suite.labels)
            else:
                result = module.compute(predictions=predicted, references=gold)
                statistic = mean_of(result["scores"])
        else:
            result = module.compute(predictions=answers, references=references)
            statistic = mean_of(result["scores"])
        scores = MetricScores(name, [float(s) for s in result["scores"]], statistic,
                              extra={k: v for k, v in result.items() if k not in ("scores",)})
        scores.estimate = bootstrap_ci(statistic, len(suite.cases), suite.bootstrap_rounds)
        out[name] = scores
    return out


def _macro_f1_statistic(predicted: list[str], gold: list[str], labels: list[str]) -> Callable:
    import numpy as np

    index = {label: i for i, label in enumerate(labels)}
    p = np.array([index.get(x, -1) for x in predicted])
    g = np.array([index.get(x, -2) for x in gold])

    def statistic(idx) -> float:
        pi, gi = p[idx], g[idx]
        f1 = []
        for k in range(len(labels)):
            tp = np.sum((pi == k) & (gi == k))
            fp = np.sum((pi == k) & (gi != k))
            fn = np.sum((pi != k) & (gi == k))
            f1.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
        return float(np.mean(f1))

    return statistic


# -- the judge --------------------------------------------------------------------------------------------

JUDGE_PROMPT = """You are judging two answers to the same customer message. Pick the answer that is more \
helpful, correct and specific. Reply with a single letter: A or B.

Customer message:
{question}

Answer A:
{a}

Answer B:
{b}

Which answer is better, A or B?"""


def _verdict(text: str) -> str | None:
    match = re.search(r"\b([AB])\b", text.strip().upper())
    return match.group(1) if match else None


class Judge:
    """Asks a model which of two answers is better: a local variant or an OpenAI-compatible endpoint."""

    def __init__(self, settings: JudgeSettings, cache: AnswerCache | None):
        self.settings = settings
        self.cache = cache
        self._bot = None

    def ask(self, question: str, a: str, b: str) -> str | None:
        prompt = JUDGE_PROMPT.format(question=question, a=a, b=b)
        key = hashlib.sha256(f"{self.settings.identity()}\x00{prompt}".encode()).hexdigest()[:16]
        if self.cache:
            hit = self.cache.get("judge", "verdicts", key)
            if hit is not None:
                return hit["verdict"]
        text = self._complete(prompt)
        verdict = _verdict(text)
        if self.cache:
            self.cache.put("judge", "verdicts", key, {"verdict": verdict, "text": text})
        return verdict

    def _complete(self, prompt: str) -> str:
        if self.settings.variant is not None:
            from assistant.generate import Bot

            if self._bot is None:
                v = self.settings.variant.variant
                judge_variant = dataclasses.replace(
                    v, context=dataclasses.replace(v.context, documents=None),
                    generation=dataclasses.replace(v.generation, max_new_tokens=4, temperature=0.0))
                self._bot = Bot(judge_variant)
            return self._bot.reply_batch([[{"role": "user", "content": prompt}]], batch_size=1)[0].text
        return openai_chat(self.settings.endpoint, self.settings.model, prompt,
                           os.environ.get(self.settings.api_key_env, ""))

    def compare(self, question: str, x: str, y: str) -> float:
        """1.0 when x wins both orders, 0.0 when y does, 0.5 otherwise (a tie or an order-biased judge)."""
        first = self.ask(question, x, y)
        second = self.ask(question, y, x)
        x_votes = (first == "A") + (second == "B")
        y_votes = (first == "B") + (second == "A")
        if x_votes == 2:
            return 1.0
        if y_votes == 2:
            return 0.0
        return 0.5


def openai_chat(endpoint: str, model: str, prompt: str, api_key: str = "", timeout: float = 120) -> str:
    """One non-streaming chat completion from an OpenAI-compatible server."""
    import urllib.request

    url = endpoint.rstrip("/") + ("/chat/completions" if endpoint.rstrip("/").endswith("/v1") else "/v1/chat/completions")
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                       "max_tokens": 4}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, body, headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = json.loads(response.read())
    return data["choices"][0]["message"]["content"] or ""


def judge_runs(suite: Suite, runs: dict[str, VariantRun], cache: AnswerCache | None,
               progress: Callable[[int], None] = lambda n: None) -> dict[str, dict[str, Any]]:
    """Each variant against the baseline, by the judge: win rate and length-controlled win rate."""
    from assistant.stats import bootstrap_ci, length_controlled_win_rate, mean_of

    judge = Judge(suite.judge, cache)
    baseline = runs[suite.judge.baseline]
    results = {}
    for name, run in runs.items():
        if name == baseline.name:
            continue
        outcomes, deltas = [], []
        for case, mine, theirs in zip(suite.cases, run.records, baseline.records):
            question = case.messages[-1]["content"]
            outcomes.append(judge.compare(question, mine["answer"], theirs["answer"]))
            deltas.append(len(mine["answer"].split()) - len(theirs["answer"].split()))
            progress(1)
        results[name] = {
            "against": baseline.name,
            "win_rate": bootstrap_ci(mean_of(outcomes), len(outcomes), suite.bootstrap_rounds),
            "length_controlled_win_rate": length_controlled_win_rate(outcomes, deltas),
            "wins": sum(o == 1.0 for o in outcomes),
            "ties": sum(o == 0.5 for o in outcomes),
            "losses": sum(o == 0.0 for o in outcomes),
            "outcomes": outcomes,
        }
    return results


# -- the whole run ----------------------------------------------------------------------------------------


@dataclass
class SuiteResult:
    suite: Suite
    runs: dict[str, VariantRun]
    scores: dict[str, dict[str, MetricScores]]
    """variant name -> metric name -> scores."""
    comparisons: dict[str, dict[tuple[str, str], Any]]
    """metric -> (variant A, variant B) -> Comparison, for every ordered pair A before B."""
    judged: dict[str, dict[str, Any]]
    winner: str
    ranking: list[str]
    seconds: float


def evaluate_suite(suite: Suite, cache: AnswerCache | None = None, quiet: bool = False,
                   refresh: bool = False, engine: str | None = None) -> SuiteResult:
    """Runs the whole suite: answers (cached), metrics, comparisons, judge, winner.

    ``engine`` overrides every variant's ``serving.engine`` (None: each variant's own)."""
    from tqdm.auto import tqdm

    from assistant.metrics import HIGHER_IS_BETTER
    from assistant.stats import paired_bootstrap

    started = time.perf_counter()
    total = len(suite.cases) * len(suite.variants)
    runs: dict[str, VariantRun] = {}
    with tqdm(total=total, desc="answering", unit="answer", disable=quiet) as bar:
        for sv in suite.variants:
            bar.set_postfix_str(sv.name)
            runs[sv.name] = answer_cases(suite, sv, cache, bar.update, refresh, engine)
    scores = {name: score_run(suite, run) for name, run in runs.items()}
    comparisons: dict[str, dict[tuple[str, str], Any]] = {}
    names = list(runs)
    for metric in suite.metrics:
        comparisons[metric] = {}
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                sa, sb = scores[a][metric], scores[b][metric]
                comparisons[metric][(a, b)] = paired_bootstrap(
                    sa.statistic, sb.statistic, len(suite.cases), sa.per_case, sb.per_case,
                    HIGHER_IS_BETTER[metric], suite.bootstrap_rounds)
    judged = {}
    if suite.judge is not None and len(runs) > 1:
        with tqdm(total=len(suite.cases) * (len(runs) - 1), desc="judging", unit="pair", disable=quiet) as bar:
            judged = judge_runs(suite, runs, cache, bar.update)
    ranking = rank_variants(suite, runs, scores)
    return SuiteResult(suite, runs, scores, comparisons, judged, ranking[0], ranking,
                       time.perf_counter() - started)


def rank_variants(suite: Suite, runs: dict[str, VariantRun], scores: dict[str, dict[str, MetricScores]]) -> list[str]:
    """Best first: by the primary metric; exact ties (at 4 decimals) by the secondary, then by speed."""
    from assistant.metrics import HIGHER_IS_BETTER

    def key(name: str) -> tuple:
        parts = []
        for metric in (suite.primary, suite.secondary):
            if metric:
                value = round(scores[name][metric].estimate.value, 4)
                parts.append(-value if HIGHER_IS_BETTER[metric] else value)
        speed = runs[name].cost.get("tokens_per_second") or 0.0
        parts.append(-(speed if math.isfinite(speed) else 0.0))
        return tuple(parts)

    return sorted(runs, key=key)
