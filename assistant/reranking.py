"""Reranking with a cross-encoder that ``assistant train-retriever`` trained (kind cross-encoder): how well each
passage answers a question, read together. The model loads once per folder and is shared by the threads of a
process. (Nothing of training is imported here, so serving code can use it; sentence-transformers loads on
first use.)
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

from assistant.context import ContextError


def load_reranker(folder: Path, num_labels: int | None = None):
    """A sentence-transformers ``CrossEncoder`` from a local folder (``num_labels=1`` starts a new scoring head
    on an embedding model such as the packaged MiniLM, as training does)."""
    from sentence_transformers import CrossEncoder

    if not (Path(folder) / "config.json").is_file():
        raise ContextError(f"{folder}: not a cross-encoder folder (no config.json)")
    return CrossEncoder(str(folder), num_labels=num_labels, local_files_only=True)


_RERANKERS: dict[str, tuple[Any, threading.Lock]] = {}
_RERANKERS_LOCK = threading.Lock()


def rerank_scores(folder: str | Path, query: str, texts: Sequence[str]) -> list[float]:
    """How well each text answers ``query``, by the cross-encoder in ``folder`` (loaded once per folder).

    Args:
        folder: a cross-encoder folder written by ``assistant train-retriever`` (kind cross-encoder).
        query: the question, as the retriever searched with it.
        texts: passages as ``retrieval.passage_text`` writes them (heading, then text), as in training.

    Returns:
        One score per text, in order, from 0 to 1: higher answers better.
    """
    key = str(Path(folder).resolve())
    with _RERANKERS_LOCK:
        if key not in _RERANKERS:
            _RERANKERS[key] = (load_reranker(Path(folder)), threading.Lock())
    model, lock = _RERANKERS[key]
    if not texts:
        return []
    with lock:  # a fast tokenizer is not safe to call from two threads at once
        scores = model.predict([(query, t) for t in texts], show_progress_bar=False)
    return [float(s) for s in scores]
