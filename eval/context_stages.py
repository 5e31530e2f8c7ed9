"""What each retrieval stage buys and costs, without generating an answer: for a suite variant and a list of
setting changes, the share of the reference facts the shown passages hold (context recall), whether the
case's source document is among them (gold @1, @3), the words shown and the prompt's tokens, and the time
to find the passages. Every figure is also given per case group (the suite's ``groups``, e.g. unseen and
paraphrase cases).

    python eval/context_stages.py eval/suites/tidewater.yaml --variant qwen0.5b-cited-prompt+retrieval \\
        --try "votes: context.conversations=data/tidewater/train.jsonl" \\
        --try "votes+document: context.conversations=data/tidewater/train.jsonl context.expand=document context.top_k=1"

Paths in --try are relative to the working directory. With no --try, the variant alone is measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from assistant.context import retrieval_query
from assistant.evaluation import load_suite
from assistant.facts import abstains, compare_facts
from assistant.generate import Bot
from assistant.variants import load_variant

PATH_KEYS = ("context.conversations", "context.embedder", "context.rerank", "context.documents")


def parse_try(text: str) -> tuple[str, list[str]]:
    """'name: key=value key=value' -> (name, ['key=value', ...]) with path values made absolute."""
    name, _, rest = text.partition(":")
    overrides = []
    for item in rest.split():
        key, _, value = item.partition("=")
        if key in PATH_KEYS and value not in ("null", "none", ""):
            value = json.dumps(str(Path(value).resolve()))
        overrides.append(f"{key}={value}")
    return name.strip(), overrides


def measure(bot: Bot, cases) -> list[dict]:
    """Per answerable case with a checkable reference fact: facts, facts shown, gold rank, words, tokens, seconds."""
    rows = []
    for case in cases:
        if abstains(case.reference):
            continue
        started = time.perf_counter()
        found = bot.retriever.find(retrieval_query(case.messages)) if bot.retriever else None
        seconds = time.perf_counter() - started
        passages = found.passages if found else []
        facts, shown, _ = compare_facts("\n\n".join(p.text for p in passages), case.reference)
        if not facts:
            continue
        sources = [p.source for p in passages]
        rank = sources.index(case.source) + 1 if case.source in sources else None
        tokens = len(bot.prepare(case.messages).input_ids)
        rows.append({"case": case.id, "tags": case.tags, "facts": facts, "shown": shown, "rank": rank,
                     "sourced": bool(case.source), "words": sum(len(p.text.split()) for p in passages),
                     "tokens": tokens, "seconds": seconds})
    return rows


def summary(rows: list[dict]) -> list[str]:
    facts = sum(r["facts"] for r in rows)
    sourced = [r for r in rows if r["sourced"]]

    def hit(k: int) -> str:
        return f"{sum(r['rank'] is not None and r['rank'] <= k for r in sourced) / len(sourced):.2f}" if sourced else "–"

    return [str(len(rows)), f"{sum(r['shown'] for r in rows) / max(facts, 1):.2f}", hit(1), hit(3),
            f"{statistics.median(r['words'] for r in rows):.0f}" if rows else "–",
            f"{statistics.median(r['tokens'] for r in rows):.0f}" if rows else "–",
            f"{1000 * statistics.median(r['seconds'] for r in rows):.0f}" if rows else "–"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", help="suite YAML file (its cases, groups and variants)")
    parser.add_argument("--variant", required=True, help="the suite variant the changes apply to")
    parser.add_argument("--try", dest="tries", action="append", default=[], metavar="'NAME: KEY=VALUE ...'",
                        help="a named set of setting changes to measure (repeatable); the variant as it is comes first")
    parser.add_argument("--json", metavar="FILE", help="also write every case's figures to this JSON file")
    parser.add_argument("--gold", action="store_true",
                        help="also print the context recall of showing each case's whole source document (the "
                             "most that retrieval from that document could hold)")
    args = parser.parse_args()

    suite = load_suite(args.suite, only=[args.variant])
    if not suite.variants:
        sys.exit(f"{args.suite}: no variant named {args.variant!r}")
    base = suite.variants[0].variant
    groups = [None, *suite.groups]
    header = ["Stages", "Group", "Cases", "Context recall", "Gold @1", "Gold @3", "Words shown", "Prompt tokens",
              "Find ms"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    everything = {}
    for name, overrides in [("as is", [])] + [parse_try(t) for t in args.tries]:
        variant = load_variant(base.to_dict() | {"name": name}, overrides, root=base.root) if overrides else base
        rows = measure(Bot(variant), suite.cases)
        everything[name] = rows
        for group in groups:
            chosen = [r for r in rows if group is None or group in r["tags"]]
            print("| " + " | ".join([name, group or "all", *summary(chosen)]) + " |", flush=True)
    if args.gold:
        docs = Path(base.resolve(base.context.documents))
        for group in groups:
            facts = held = 0
            for case in suite.cases:
                if abstains(case.reference) or not case.source or (group and group not in case.tags):
                    continue
                f, h, _ = compare_facts((docs / case.source).read_text(encoding="utf-8"), case.reference)
                facts, held = facts + f, held + h
            print(f"whole source document, {group or 'all'}: context recall {held / max(facts, 1):.2f} ({facts} facts)")
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
