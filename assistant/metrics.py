"""The project's answer metrics: modules in the ``evaluate`` library's format under eval/metrics/, loaded by path.

``evaluate.load("rouge")`` would fetch the module from the Hugging Face Hub; a path never does, so these
work offline. Every module returns its aggregate under its own name and per-example floats under
``"scores"`` (in input order), which is what bootstrap confidence intervals and paired tests need.

    from assistant.metrics import load_metric
    load_metric("rouge_l").compute(predictions=["..."], references=["..."])
    # {"rouge_l": 0.83, "scores": [0.83]}
"""

from __future__ import annotations

import functools
from pathlib import Path

# The project's eval/metrics/, reached from inside the package (see assistant/bundled): the repository's own
# folder in a checkout or an editable install, the copy a wheel carries after `pip install .`.
METRICS_DIR = (Path(__file__).parent / "bundled" / "metrics").resolve()

HIGHER_IS_BETTER = {
    "abstention": True,
    "accuracy": True,
    "bleu": True,
    "chrf": True,
    "citations": True,
    "context_recall": True,
    "exact_match": True,
    "grounding": True,
    "key_facts": True,
    "macro_f1": True,
    "perplexity": False,
    "rouge_l": True,
    "semantic_similarity": True,
}
"""Direction of each metric, for picking a winner."""

SCALE = {
    "abstention": (0.0, 1.0),
    "accuracy": (0.0, 1.0),
    "bleu": (0.0, 100.0),
    "chrf": (0.0, 100.0),
    "citations": (0.0, 1.0),
    "context_recall": (0.0, 1.0),
    "exact_match": (0.0, 1.0),
    "grounding": (0.0, 1.0),
    "key_facts": (0.0, 1.0),
    "macro_f1": (0.0, 1.0),
    "perplexity": (1.0, float("inf")),
    "rouge_l": (0.0, 1.0),
    "semantic_similarity": (-1.0, 1.0),
}
"""Range of each metric's aggregate and per-example scores."""


def available_metrics() -> list[str]:
    """Names of the folders under eval/metrics/ that hold a module of the same name (``<name>/<name>.py``)."""
    if not METRICS_DIR.is_dir():
        return []
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


@functools.cache
def load_metric(name: str):
    """Loads one of the project's metrics (once per process; later calls return the same instance).

    The instance keeps its inputs in memory rather than in Arrow files under ~/.cache/huggingface/metrics,
    so no lock files are left behind. It is stateful while computing: do not call ``compute`` on it from
    two threads at once.

    Args:
        name: a folder name under eval/metrics/, e.g. "rouge_l".

    Returns:
        The ``evaluate.EvaluationModule``; call ``.compute(predictions=..., references=...)`` on it.

    Raises:
        ValueError: no such metric; the message lists the available ones.
    """
    if name not in available_metrics():
        raise ValueError(
            f"unknown metric {name!r}: no {METRICS_DIR / name / (name + '.py')}; "
            f"available: {', '.join(available_metrics()) or 'none'}"
        )
    import evaluate

    return evaluate.load(str(METRICS_DIR / name), keep_in_memory=True)
