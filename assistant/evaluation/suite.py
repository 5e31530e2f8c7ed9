"""A suite on disk: its YAML fields, its variants and its cases, each checked with the file and line of
every problem before any model loads.

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

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from assistant.config import Variant
from assistant.data import jsonl_rows
from assistant.evaluation.cost import BUDGET_FIELDS, Budget
from assistant.messages import message_problems
from assistant.settings_reader import ConfigError, read_settings_file
from assistant.variants import load_variant

LABEL_METRICS = ("accuracy", "macro_f1")
DEFAULT_METRICS = ["rouge_l", "chrf", "bleu", "exact_match", "semantic_similarity", "perplexity"]
SUITE_FIELDS = {
    "name": "Suite name; reports are written to <reports>/<name>-<timestamp>/.",
    "cases": "JSONL file of cases in any documented row format: 'messages' (or 'question') with 'reference', "
             "'prompt'/'completion', or 'text'/'label'; optional 'id', 'label', 'tags'.",
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
    "cost_probe": "Cases answered one at a time, streamed, to time the first token and single-stream decode.",
    "promote": "After the report, run the promotion gate on its winner (assistant promote): serve it only if it "
               "beats the served variant significantly and is not worse on facts beyond promotion_margin.",
    "promotion_margin": "How much worse on a fact metric a promoted winner may be (default 0.02).",
    "groups": "Case tags whose cases the fact-loss section reports separately as well as all together, e.g. "
              "[unseen, paraphrase].",
    "budget": "Cost budget for the winner: min_decode_tokens_per_second, max_first_token_seconds, "
              "min_tokens_per_second, max_training_minutes. The winner is the best variant within it; the report "
              "says what a bigger budget would buy.",
}


class SuiteError(ConfigError):
    """A problem in a suite or its cases; the message names the file and line."""


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
    source: str | None = None
    """The document that holds the answer (a file under the variant's documents folder), when the case names
    it: what retrieval hit@k is measured against."""

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
    """A case from a row of any documented format: {messages (ending with the user's turn) or question,
    reference}, {prompt, completion}, or {text, label} (the label is the reference). Chat rows that end with
    the assistant's turn take it as the reference."""
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    label = row.get("label")
    if label is not None and (not isinstance(label, (str, int)) or isinstance(label, bool)):
        return None, "'label' must be text"
    if "messages" in row and isinstance(row["messages"], list) and row["messages"] and "reference" not in row \
            and isinstance(row["messages"][-1], dict) and row["messages"][-1].get("role") == "assistant":
        row = {**row, "messages": row["messages"][:-1], "reference": row["messages"][-1].get("content")}
    if "messages" in row:
        problems = message_problems(row["messages"], last="user", strict_order=False)
        if problems:
            return None, "; ".join(problems)
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    elif "question" in row or "prompt" in row or "text" in row:
        key = next(k for k in ("question", "prompt", "text") if k in row)
        if not isinstance(row[key], str) or not row[key].strip():
            return None, f"'{key}' must be non-empty text"
        messages = [{"role": "user", "content": row[key]}]
    else:
        return None, "a case needs 'messages', 'question', 'prompt' or 'text'"
    reference = row.get("reference", row.get("completion", None if label is None else str(label)))
    if not isinstance(reference, str) or not reference.strip():
        return None, "a case needs a non-empty 'reference' answer (or 'completion', or a 'label')"
    tags = row.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return None, "'tags' must be a list of strings"
    source = row.get("source")
    if source is not None and (not isinstance(source, str) or not source.strip()):
        return None, "'source' must be the name of a document file"
    return Case(str(row.get("id", f"line-{number}")), where, messages, reference,
                None if label is None else str(label), tags, source), None


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
    budget: Budget | None = None
    promote: bool = False
    promotion_margin: float = 0.02
    groups: list[str] = field(default_factory=list)
    """Case tags reported separately in the fact-loss section."""

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
    path = Path(path)
    data = _read_yaml_with_lines(path)
    if not isinstance(data, _Mapping):
        raise SuiteError(f"{path}: expected a mapping of suite settings at the top level")
    fields = _Fields(path, data)
    for key in data:
        if key not in SUITE_FIELDS:
            fields.problem(key, f"unknown suite field {key!r} (known: {', '.join(SUITE_FIELDS)})")
    variants = _variants(fields, list(only))
    cases = _cases(fields, limit)
    labels = data.get("labels") or sorted({c.label for c in cases if c.label is not None})
    metrics, primary, secondary = _metrics(fields, cases, labels)
    judge = None
    if data.get("judge") is not None:
        try:
            judge = _judge(data["judge"], variants, fields.root, fields.at("judge"))
        except ConfigError as exc:
            fields.problems.append(str(exc))
    numbers = {key: fields.whole_number(key, default, lowest)
               for key, default, lowest in (("batch_size", 8, 1), ("bootstrap_rounds", 2000, 100), ("cost_probe", 3, 0))}
    budget = _budget(fields)
    groups = data.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        fields.problem("groups", "'groups' must be a list of case tags")
        groups = []
    for group in groups:
        if fields.limit is None and cases and not any(group in c.tags for c in cases):
            fields.problem("groups", f"no case is tagged {group!r}")
    if fields.problems:
        raise SuiteError(f"{path}: {len(fields.problems)} problem(s):\n  " + "\n  ".join(fields.problems))
    if only:
        variants = [v for v in variants if v.name in only]
    reports = (fields.root / data["reports"]).resolve() if data.get("reports") else _default_reports(fields.root)
    return Suite(data.get("name") or path.stem, path.resolve(), fields.cases_file, cases, variants, metrics, primary,
                 secondary, labels, numbers["batch_size"], fields.limit, judge, reports, bool(data.get("serve", True)),
                 numbers["bootstrap_rounds"], numbers["cost_probe"], budget, bool(data.get("promote", False)),
                 float(data.get("promotion_margin", 0.02)), list(groups))


class _Fields:
    """A suite's top-level mapping, the problems found in it so far, and where each field was written."""

    def __init__(self, path: Path, data: _Mapping):
        self.path, self.data = path, data
        self.root = path.resolve().parent
        self.problems: list[str] = []
        self.cases_file: Path | None = None
        self.limit: int | None = None

    def at(self, key: str | None = None, mapping: Any = None) -> str:
        """'file:line' of a key (or of the mapping itself when the key is absent)."""
        mapping = self.data if mapping is None else mapping
        line = getattr(mapping, "key_lines", {}).get(key) if key else None
        return f"{self.path}:{line or getattr(mapping, 'line', 1)}"

    def problem(self, key: str | None, text: str) -> None:
        self.problems.append(f"{self.at(key)}: {text}")

    def whole_number(self, key: str, default: int, lowest: int) -> int:
        value = self.data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            self.problem(key, f"{key!r} must be a whole number of at least {lowest}")
        return value


def _variants(fields: _Fields, only: list[str]) -> list[SuiteVariant]:
    """Every variant entry, built and checked: its settings, then its template, examples and documents
    (read and cut into passages, not embedded: no model of any kind loads before the suite is valid)."""
    from assistant.context import load_documents
    from assistant.generate import Bot

    entries = fields.data.get("variants")
    if not isinstance(entries, list) or not entries:
        fields.problem("variants", "'variants' must be a non-empty list")
        entries = []
    variants: list[SuiteVariant] = []
    for number, entry in enumerate(entries, 1):
        where = fields.at(mapping=entry) if isinstance(entry, _Mapping) else str(fields.path)
        if only and isinstance(entry, _Mapping) and entry.get("name") and entry["name"] not in only:
            continue  # not asked for: its files need not exist (an adapter not trained yet)
        try:
            variants.append(_suite_variant(entry, number, where, fields.root))
        except ConfigError as exc:
            fields.problems.append(f"{where}: variant {number}: {exc}")
    names = [v.name for v in variants]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        fields.problems.append(f"{fields.path}: two variants are named {dup!r}; give each a distinct 'name'")
    for wanted in only:
        if wanted not in names:
            fields.problems.append(f"--variants: no variant named {wanted!r} in {fields.path} (have: {', '.join(names)})")
    for v in variants:
        try:
            bot = Bot(v.variant)
            _ = bot.template, bot.examples
            if v.variant.context.documents:
                load_documents(v.variant.resolve(v.variant.context.documents), v.variant.context.chunk_words)
        except Exception as exc:  # PromptError, ContextError, OSError: all user errors here
            fields.problems.append(f"{v.where}: variant {v.name!r}: {exc}")
    return variants


def _suite_variant(entry: Any, number: int, where: str, root: Path) -> SuiteVariant:
    """A suite's variant entry: {file, name, set} or settings written inline (with an optional 'set')."""
    if not isinstance(entry, dict):
        raise ConfigError("expected a mapping with 'file' (and optional 'name', 'set') or inline settings")
    entry = _plain(entry)
    overrides = entry.pop("set", None) or {}
    if not isinstance(overrides, dict):
        raise ConfigError("'set' must map dotted keys to values, e.g. {context.top_k: 5}")
    if "file" in entry:
        file, name = (root / entry.pop("file")).resolve(), entry.pop("name", None)
        if entry:
            raise ConfigError(f"with 'file', only 'name' and 'set' may be given (found {', '.join(entry)})")
        variant = load_variant(file, overrides, name=name)
    else:
        variant = load_variant(entry, overrides, name=entry.get("name") or f"variant-{number}", root=root, where=where)
    return SuiteVariant(variant.name, variant, where)


def _cases(fields: _Fields, limit: int | None) -> list[Case]:
    """The cases file, read and checked, cut to the limit (the command's, else the suite's)."""
    value = fields.data.get("cases")
    if not isinstance(value, str):
        fields.problem("cases", "'cases' must name a JSONL file")
        return []
    fields.cases_file = (fields.root / value).resolve()
    if not fields.cases_file.is_file():
        fields.problem("cases", f"cases file {fields.cases_file} does not exist")
        return []
    cases: list[Case] = []
    try:
        cases = read_cases(fields.cases_file)
    except SuiteError as exc:
        fields.problems.append(str(exc))
    limit = limit if limit is not None else fields.data.get("limit")
    if limit is not None:
        if not isinstance(limit, int) or limit < 1:
            fields.problem("limit", "'limit' must be a positive whole number")
        else:
            fields.limit, cases = limit, cases[:limit]
    return cases


def _metrics(fields: _Fields, cases: list[Case], labels: list[str]) -> tuple[list[str], str, str | None]:
    """The metrics to compute (known ones only), the primary that picks the winner and the tie-breaker."""
    from assistant.metrics import available_metrics

    data = fields.data
    metrics = data.get("metrics") or DEFAULT_METRICS + (list(LABEL_METRICS) if labels else [])
    known = available_metrics()
    if not isinstance(metrics, list):
        fields.problem("metrics", "'metrics' must be a list")
        metrics = []
    for metric in metrics:
        if metric not in known:
            fields.problem("metrics", f"unknown metric {metric!r} (available: {', '.join(known)})")
    if any(m in LABEL_METRICS for m in metrics) and cases and not all(c.label for c in cases):
        missing = next(c for c in cases if not c.label)
        fields.problems.append(f"{missing.where}: label metrics are requested but this case has no 'label'")
    primary = data.get("primary") or (metrics[0] if metrics else "")
    secondary = data.get("secondary")
    for key, value in (("primary", primary), ("secondary", secondary)):
        if value is not None and value not in metrics:
            fields.problem(key, f"{key} metric {value!r} is not among the suite's metrics ({', '.join(metrics)})")
    return metrics, primary, secondary


def _default_reports(root: Path) -> Path:
    """eval/reports of the project the suite lives in (the suite's folder or a parent with eval/)."""
    for folder in [root, *root.parents]:
        if (folder / "eval").is_dir() and folder.name != "eval":
            return folder / "eval" / "reports"
        if folder.name == "eval":
            return folder / "reports"
    return root / "reports"


def _budget(fields: _Fields) -> Budget | None:
    data = fields.data.get("budget")
    if data is None:
        return None
    if not isinstance(data, dict):
        fields.problem("budget", "'budget' must be a mapping of limits, e.g. {max_first_token_seconds: 3}")
        return None
    values, wrong = {}, False
    for key, value in data.items():
        if key not in BUDGET_FIELDS:
            fields.problem("budget", f"unknown budget limit {key!r} (known: {', '.join(sorted(BUDGET_FIELDS))})")
            wrong = True
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            fields.problem("budget", f"budget {key!r} must be a number of at least 0")
            wrong = True
        else:
            values[key] = float(value)
    return None if wrong else Budget(**values)


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
    variant = load_variant((root / data["variant"]).resolve())
    return JudgeSettings(baseline, SuiteVariant(variant.name, variant, where))
