"""Evaluation speed by engine: the demo support suite answered uncached on each engine, side by side.

    .venv/bin/python bench/eval_speed.py [--limit 40] [--engines transformers,llamacpp] [--json PATH]

Each engine runs the same suite (eval/suites/tidewater.yaml, its first ``--limit`` cases, every variant)
in a process of its own with no answer cache, as `assistant eval --no-cache --engine NAME` would; the
wall time covers answering, reference perplexity, scoring and statistics (not the report files). Prints
the wall times, their ratio, and each engine's ranking, so that a faster engine is seen to pick the same
winner. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SUITE = ROOT / "eval" / "suites" / "tidewater.yaml"


def run_one(engine: str, limit: int | None) -> dict:
    from assistant.evaluation import evaluate_suite, load_suite

    suite = load_suite(SUITE, limit=limit)
    started = time.perf_counter()
    result = evaluate_suite(suite, cache=None, quiet=True, engine=engine)
    wall = time.perf_counter() - started
    primary = suite.primary
    return {"engine": engine, "cases": len(suite.cases), "variants": len(suite.variants), "seconds": wall,
            "ranking": result.ranking,
            "primary": {n: result.scores[n][primary].estimate.value for n in result.ranking},
            "tokens": {n: sum(r.new_tokens for r in run.records) for n, run in result.runs.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=40, help="first N cases of the suite (default 40; 0: all 106)")
    parser.add_argument("--engines", default="transformers,llamacpp", help="engines, compared with the first")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one engine, in a child process
    args = parser.parse_args()
    limit = args.limit or None
    if args.only:
        print(json.dumps(run_one(args.only, limit)))
        return 0
    results = []
    for engine in args.engines.split(","):
        out = subprocess.run([sys.executable, __file__, "--only", engine, "--limit", str(args.limit)], check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"{engine}: {results[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    base = results[0]
    print("| engine | cases x variants | wall seconds | vs " + base["engine"] + " | ranking (primary metric) |")
    print("|---|---:|---:|---:|---|")
    for r in results:
        ranking = ", ".join(f"{n} {r['primary'][n]:.3f}" for n in r["ranking"])
        print(f"| {r['engine']} | {r['cases']} x {r['variants']} | {r['seconds']:.0f} | "
              f"{base['seconds'] / r['seconds']:.2f}x faster | {ranking} |")
    same = all(r["ranking"][0] == base["ranking"][0] for r in results)
    print(f"\nsame winner on every engine: {'yes' if same else 'no'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
