"""The served winner at bare speed: the adapter merged into a copy of its GGUF base, against the same adapter
applied per request (LoRA on the shared base) and against the bare base, side by side in one process.

    .venv/bin/python bench/serve_speed.py [--variant FILE] [--rounds 3] [--parity 40] [--json PATH]

Configurations (llama.cpp, the CPU's engine, each on a server of its own):
  bare       the base GGUF file as it is, no adapter: the ceiling
  merged     the base with the adapter folded in (models/export.merge_into_gguf), what the app's chat serves
  unmerged   the base plus the GGUF LoRA applied per request, what the arena and the API serve

Method
- Decode: the variant answers the support questions below through ``Bot.stream``, greedy, up to 128 new
  tokens; the decode rate of an answer is (n - 1) / (t_last - t_first), prefill excluded. Rounds are
  interleaved (bare, merged, unmerged, bare, ...) so that drift on the machine hits every configuration.
- First token: the demo's median prompt (the suite's cases rendered as served: the one of median length),
  its question made new each time (a distinct suffix), on a server that has answered before: llama.cpp keeps
  the previous prompt in the slot and reuses the longest shared prefix, here the system message's fixed
  head, so the passages and the question are what is prefilled, as for any new question in a running app.
- Parity: the merged and the unmerged variant answer the first ``--parity`` suite cases greedily; the share
  of identical answers, and of answers whose first 20 tokens agree, is reported. The merge re-quantizes each
  adapted matrix (W + B A) to the base's type, one more rounding than the unmerged path; when that rounding
  would lose the adapter (``export.MergeLossError``) the bot serves it unmerged, and ``merged`` is reported
  as refused, with the reason.
- Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "How long do I have to return a grinder?",
    "My espresso machine shows error E3, what does it mean?",
    "Can I pause my coffee subscription?",
    "Do you ship to Canada, and how long does it take?",
    "What does the warranty on the Harbor espresso machine cover?",
]
CONFIGS = ("bare", "merged", "unmerged")


def bots(variant_file: Path):
    from assistant.generate import Bot
    from assistant.variants import load_variant

    variant = load_variant(variant_file, ["generation.max_new_tokens=128"])
    bare = load_variant(variant_file, ["generation.max_new_tokens=128", "model.adapter=null"])
    return {"bare": Bot(bare, "llamacpp"), "merged": Bot(variant, "llamacpp", merged=True),
            "unmerged": Bot(variant, "llamacpp")}


def decode_rate(bot, question: str) -> float | None:
    stats: dict = {}
    first = last = None
    for _ in bot.stream(bot.prepare([{"role": "user", "content": question}]), stats):
        last = time.perf_counter()
        first = first or last
    n = stats["new_tokens"]
    return (n - 1) / (last - first) if n > 8 and last > first else None


def first_token(bot, history) -> float:
    started = time.perf_counter()
    _, stream = bot.start(history)
    try:
        next(stream, None)
        return time.perf_counter() - started
    finally:
        stream.close()


def median_case(bot):
    """The suite case whose rendered prompt has the median length, and that length."""
    from assistant.evaluation.suite import load_suite

    suite = load_suite(ROOT / "eval" / "suites" / "tidewater.yaml", only=["prompt+retrieval"])
    sized = sorted((len(bot.prepare(c.messages).input_ids), i) for i, c in enumerate(suite.cases))
    length, index = sized[len(sized) // 2]
    return suite.cases, suite.cases[index], length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default=str(ROOT / "adapters" / "tidewater-qwen-cited" / "variant.yaml"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parity", type=int, default=40, help="suite cases answered by merged and unmerged")
    parser.add_argument("--json", default=str(ROOT / "bench" / "serve_speed.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # as the app sets it beside llama.cpp
    served = bots(Path(args.variant))
    for bot in served.values():
        bot.engine.warm()
    if not served["merged"].merged:
        print("merged: refused, the bot serves the adapter unmerged (the reason is printed above)")
    cases, median, length = median_case(served["bare"])
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    first: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for round_ in range(args.rounds):
        for name in CONFIGS:
            bot = served[name]
            rates[name] += [r for r in (decode_rate(bot, q) for q in QUESTIONS) if r]
            fresh = [{"role": "user", "content": f"{median.messages[-1]['content']} (order {round_}{name})"}]
            first[name].append(first_token(bot, fresh))
    summary = {name: {"decode_tokens_per_second": statistics.median(rates[name]),
                      "decode_range": [min(rates[name]), max(rates[name])],
                      "first_token_seconds": statistics.median(first[name]),
                      "first_token_range": [min(first[name]), max(first[name])]} for name in CONFIGS}
    bare = summary["bare"]["decode_tokens_per_second"]
    for name in CONFIGS:
        summary[name]["decode_vs_bare"] = summary[name]["decode_tokens_per_second"] / bare
    merged = served["merged"].reply_batch([c.messages for c in cases[: args.parity]], batch_size=4)
    unmerged = served["unmerged"].reply_batch([c.messages for c in cases[: args.parity]], batch_size=4)
    tokenizer = served["bare"].tokenizer
    same = sum(a.text == b.text for a, b in zip(merged, unmerged))
    prefix = sum(tokenizer(a.text)["input_ids"][:20] == tokenizer(b.text)["input_ids"][:20]
                 for a, b in zip(merged, unmerged))
    result = {"variant": str(Path(args.variant).relative_to(ROOT)), "median_prompt_tokens": length,
              "rounds": args.rounds, "configs": summary, "merge_refused": not served["merged"].merged,
              "parity": {"cases": len(merged), "identical": same, "first_20_tokens_identical": prefix}}
    Path(args.json).write_text(json.dumps(result, indent=1))
    for name in CONFIGS:
        s = summary[name]
        print(f"{name:9s} decode {s['decode_tokens_per_second']:6.1f} tok/s ({s['decode_vs_bare']:.2f}x bare, range "
              f"{s['decode_range'][0]:.1f}-{s['decode_range'][1]:.1f}); first token {s['first_token_seconds']:.2f} s "
              f"(range {s['first_token_range'][0]:.2f}-{s['first_token_range'][1]:.2f})")
    print(f"median prompt {length} tokens; parity merged vs unmerged: {same}/{len(merged)} identical answers, "
          f"{prefix}/{len(merged)} with the same first 20 tokens")


if __name__ == "__main__":
    main()
