"""Retrieval recall on a domain's held-out cases: is the document that answers a case among the top k?

A case's answering document is the ``source`` of the training conversation it paraphrases
(``paraphrase_of``), so no hand labels are needed.

    python eval/retrieval_recall.py --data data/tidewater
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from assistant.context import load_documents
from assistant.retrieval import Retriever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/tidewater", help="domain folder with docs/, train.jsonl, eval.jsonl")
    parser.add_argument("--methods", default="bm25,dense,hybrid", help="retrievers to compare, comma-separated")
    parser.add_argument("--k", default="1,3,5", help="cut-offs to report, comma-separated")
    parser.add_argument("--chunk-words", type=int, default=120, help="passage size in words (context.chunk_words)")
    args = parser.parse_args()

    data = Path(args.data)
    train = {row["id"]: row for row in map(json.loads, (data / "train.jsonl").read_text().splitlines())}
    cases = [json.loads(line) for line in (data / "eval.jsonl").read_text().splitlines()]
    cases = [c for c in cases if train.get(c.get("paraphrase_of"), {}).get("source")]
    passages = load_documents(data / "docs", args.chunk_words)
    cutoffs = [int(k) for k in args.k.split(",")]

    print(f"{len(cases)} cases, {len(passages)} passages from {data / 'docs'}\n")
    print("| retriever | " + " | ".join(f"recall@{k}" for k in cutoffs) + " | index build s |")
    print("|---|" + "---:|" * (len(cutoffs) + 1))
    for method in args.methods.split(","):
        started = time.perf_counter()
        retriever = Retriever(passages, method)
        build = time.perf_counter() - started
        found = {k: 0 for k in cutoffs}
        for case in cases:
            expected = train[case["paraphrase_of"]]["source"]
            ranked = retriever.search(case["messages"][0]["content"], max(cutoffs))
            for k in cutoffs:
                found[k] += expected in {p.source for p in ranked[:k]}
        print(f"| {method} | " + " | ".join(f"{found[k] / len(cases):.3f}" for k in cutoffs) + f" | {build:.1f} |")


if __name__ == "__main__":
    main()
