"""Re-scores a committed report's answers with today's fact rules (assistant/facts.py), without generating:
key-fact recall, contradictions and, from the passages each answer was shown, context recall, next to what
the report says. Use it after changing the fact rules, to see what moved and why.

    python eval/rescore.py eval/reports/tidewater-support-20261203-123219 --docs data/tidewater/docs

Answers come from the report's results.jsonl. Reports written before answers kept their passages' text
(``passage_texts``) name each passage as 'file - heading'; its text is then read again from the documents
(every passage under that heading, cut as ``--chunk-words`` says), which is what the model was shown unless
the documents changed since.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from assistant.context import load_documents
from assistant.facts import abstains, compare_facts


def passage_texts(row: dict, by_cite: dict[str, list[str]]) -> list[str]:
    if row.get("passage_texts") is not None:
        return row["passage_texts"]
    return ["\n\n".join(by_cite.get(cite, [])) for cite in row.get("passages", [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="a report folder (with results.jsonl and summary.json)")
    parser.add_argument("--docs", help="documents folder, for reports whose answers did not keep their passages")
    parser.add_argument("--chunk-words", type=int, default=120, help="passage size the variants used")
    args = parser.parse_args()

    folder = Path(args.report)
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
    by_cite: dict[str, list[str]] = defaultdict(list)
    if args.docs:
        for p in load_documents(Path(args.docs), args.chunk_words):
            by_cite[p.cite()].append(p.text)

    per_variant: dict[str, dict[str, float]] = {}
    for row in rows:
        if abstains(row["reference"]):
            continue
        v = per_variant.setdefault(row["variant"], defaultdict(float))
        facts, stated, contradicted = compare_facts(row["answer"], row["reference"])
        held = compare_facts("\n\n".join(passage_texts(row, by_cite)), row["reference"])[1]
        v["cases"] += 1
        v["with_facts_before"] += row["scores"].get("key_facts") is not None
        v["with_facts"] += facts > 0
        v["facts"] += facts
        v["stated"] += stated
        v["contradicted"] += contradicted
        v["in_context"] += held

    header = ["Variant", "Cases with a fact (report)", "Cases with a fact (now)", "Key-fact recall (report)",
              "Key-fact recall (now)", "Contradicted / answer (report)", "Contradicted / answer (now)",
              "Context recall (now)"]
    print(f"{folder.name}: {len(rows)} answers\n")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, v in per_variant.items():
        old = summary.get("variants", {}).get(name, {})
        before = old.get("metrics", {}).get("key_facts", {}).get("value")
        old_contradicted = old.get("errors_per_answer", {}).get("contradicted", {}).get("value")
        answers = sum(1 for r in rows if r["variant"] == name)
        cells = [name, f"{v['with_facts_before']:.0f}/{v['cases']:.0f}", f"{v['with_facts']:.0f}/{v['cases']:.0f}",
                 f"{before:.3f}" if before is not None else "–", f"{v['stated'] / max(v['facts'], 1):.3f}",
                 f"{old_contradicted:.3f}" if old_contradicted is not None else "–",
                 f"{v['contradicted'] / answers:.3f}",
                 f"{v['in_context'] / max(v['facts'], 1):.3f}" if any(r.get("passages") for r in rows
                                                                     if r["variant"] == name) else "–"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
