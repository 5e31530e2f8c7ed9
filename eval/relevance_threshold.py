"""Choosing ``context.min_relevance``: how relevant is the best passage for questions the documents answer,
against questions they do not? Read from training rows only, never from the held-out cases.

    python eval/relevance_threshold.py --answerable data/tidewater/train.jsonl \
        --unanswerable data/tidewater/unanswerable-train.jsonl --docs data/tidewater/docs

For each question (the first user message of a row) the retriever's relevance is computed as the bot computes
it (``Retriever.retrieve``: the best passage's cosine similarity for dense and hybrid). Printed: the two
distributions, and for a range of thresholds the share of unanswerable questions that would abstain and of
answerable ones that would wrongly abstain. The suggested threshold is the highest share of abstentions on
unanswerable questions that keeps false abstentions at or under ``--max-false``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from assistant.context import load_documents
from assistant.retrieval import Retriever


def questions(path: Path) -> list[str]:
    """The first user message of every chat row in a JSONL file."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            messages = json.loads(line)["messages"]
            found.append(next(m["content"] for m in messages if m["role"] == "user"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answerable", required=True, help="JSONL chat rows whose answer is in the documents")
    parser.add_argument("--unanswerable", required=True, help="JSONL chat rows whose answer is in no document")
    parser.add_argument("--docs", required=True, help="the documents folder (context.documents)")
    parser.add_argument("--retriever", default="hybrid", choices=["dense", "hybrid", "bm25"])
    parser.add_argument("--chunk-words", type=int, default=120, help="passage size in words (context.chunk_words)")
    parser.add_argument("--max-false", type=float, default=0.05, help="largest share of false abstentions allowed")
    args = parser.parse_args()

    retriever = Retriever(load_documents(Path(args.docs), args.chunk_words), args.retriever)
    relevance = {name: np.array([retriever.retrieve(q, 1).relevance for q in questions(Path(path))])
                 for name, path in (("answerable", args.answerable), ("unanswerable", args.unanswerable))}
    for name, values in relevance.items():
        q = np.percentile(values, [5, 25, 50, 75, 95])
        print(f"{name:12s} n={len(values):4d}  p5 {q[0]:.3f}  p25 {q[1]:.3f}  median {q[2]:.3f}  "
              f"p75 {q[3]:.3f}  p95 {q[4]:.3f}")

    print("\n| min_relevance | abstains on unanswerable | abstains on answerable (false) |\n|---:|---:|---:|")
    candidates = np.unique(np.round(np.concatenate(list(relevance.values())), 3))
    best = None
    for threshold in candidates:
        caught = float(np.mean(relevance["unanswerable"] < threshold))
        false = float(np.mean(relevance["answerable"] < threshold))
        if false <= args.max_false and (best is None or caught > best[1]):
            best = (float(threshold), caught, false)
    for threshold in np.linspace(candidates.min(), candidates.max(), 9):
        print(f"| {threshold:.3f} | {np.mean(relevance['unanswerable'] < threshold):.2f} | "
              f"{np.mean(relevance['answerable'] < threshold):.2f} |")
    if best:
        print(f"\nsuggested min_relevance {best[0]:.3f}: abstains on {best[1]:.0%} of the unanswerable questions, "
              f"wrongly on {best[2]:.0%} of the answerable ones (at most {args.max_false:.0%} allowed)")


if __name__ == "__main__":
    main()
