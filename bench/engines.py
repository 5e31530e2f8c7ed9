"""Engines side by side on the served demo winner: single-stream decode, time to first token, serving memory.

    .venv/bin/python bench/engines.py [--repeats 3] [--json PATH]

Configurations, measured in one run with the same prompts:
  transformers   the path every answer took before engines: NF4 base + the demo adapter, model.generate
  llamacpp       llama.cpp in process: the base as Q8_0 GGUF + the demo adapter as GGUF LoRA, per request
  llamacpp-bare  the same llama.cpp base with no adapter (the ceiling the adapter's cost is measured against)

Method
- Decode: the served winner (adapters/tidewater-multitask: support persona + 3 retrieved passages) answers
  five support questions through ``Bot.stream``, greedy, up to 128 new tokens. Decode rate per answer is
  ``(n - 1) / (t_last - t_first)``: tokens after the first over the time they took (prefill excluded).
- Time to first token: a prompt of exactly 500 tokens (support documents' text, a different slice each
  time so that no prefix is cached), one new token, from the call to the first piece.
- Each configuration runs in a process of its own (as each is served), one after another: a warm-up round,
  then ``--repeats`` timed rounds; medians and ranges are reported. torch runs with 2 threads for
  transformers and 1 beside llama.cpp (as app.py sets it): thread pools left over from one engine would
  otherwise slow the next.
- Memory: the app (app.py) started in a subprocess with the four demo arena variants (two adapters, with and
  without retrieval) on each engine; resident memory (VmRSS) after every variant has answered once.
- Nothing else may run on the machine meanwhile: two thread pools on 2 cores slow both by 10x or more.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

QUESTIONS = [
    "How long do I have to return a grinder?",
    "My espresso machine shows error E3, what does it mean?",
    "Can I pause my coffee subscription?",
    "Do you ship to Canada, and how long does it take?",
    "What does the warranty on the Harbor espresso machine cover?",
]
WINNER = ROOT / "adapters" / "tidewater-multitask" / "variant.yaml"


def make_bot(name: str):
    from assistant.generate import Bot
    from assistant.variants import load_variant

    settings = ["generation.max_new_tokens=128"] + (["model.adapter=null"] if name == "llamacpp-bare" else [])
    return Bot(load_variant(WINNER, settings), "transformers" if name == "transformers" else "llamacpp")


CONFIGS = ("transformers", "llamacpp", "llamacpp-bare")


def decode_rates(bot) -> list[float]:
    rates = []
    for question in QUESTIONS:
        prepared = bot.prepare([{"role": "user", "content": question}])
        stats: dict = {}
        first = last = None
        for _ in bot.stream(prepared, stats):
            last = time.perf_counter()
            first = first or last
        n = stats["new_tokens"]
        if n > 8 and last > first:
            rates.append((n - 1) / (last - first))
    return rates


def first_token(bot, ids: list[int]) -> float:
    from assistant.generate import PreparedPrompt

    prepared = PreparedPrompt([], "", ids, [], 0, 0)
    started = time.perf_counter()
    stream = bot.stream(prepared, sampling=bot.sampling(max_new_tokens=1))
    next(stream, None)
    elapsed = time.perf_counter() - started
    stream.close()
    return elapsed


def serving_memory(engine: str) -> dict:
    """Resident memory of the app serving the demo arena (4 variants) after each answered once."""
    from load_test import free_port, start_app
    from openai import OpenAI

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_app(["--engine", engine, "--set", "generation.max_new_tokens=16"], Path(tmp), port)
        try:
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
            models = [m.id for m in client.models.list().data]
            for model in models:
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTIONS[0]}])
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS"))
            return {"variants": len(models), "rss_mib": rss / 2**20}
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def measure(name: str, repeats: int) -> dict:
    """Warm-up plus ``repeats`` rounds of one configuration, in this process."""
    import torch

    torch.set_num_threads(2 if name == "transformers" else 1)
    bot = make_bot(name)
    text = " ".join(p.read_text() for p in sorted((ROOT / "data" / "tidewater" / "docs").glob("*.md")))
    corpus = bot.tokenizer(text, add_special_tokens=False)["input_ids"]
    result: dict = {"decode": [], "ttft": []}
    for round_ in range(repeats + 1):
        rates = decode_rates(bot)
        offset = 997 * (round_ + 1)
        ttft = first_token(bot, corpus[offset : offset + 500])
        print(f"round {round_} {name}: decode {statistics.median(rates):.1f} tok/s, TTFT {ttft * 1000:.0f} ms",
              file=sys.stderr, flush=True)
        if round_ > 0:  # round 0 is the warm-up (model loads, GGUF conversion, caches)
            result["decode"].append(statistics.median(rates))
            result["ttft"].append(ttft)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    parser.add_argument("--json", help="also write the raw timings to this JSON file")
    parser.add_argument("--no-memory", action="store_true", help="skip the app memory measurement")
    parser.add_argument("--only", choices=CONFIGS, help=argparse.SUPPRESS)  # one configuration, in a child
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args.repeats)))
        return 0

    results = {}
    for name in CONFIGS:
        out = subprocess.run([sys.executable, __file__, "--only", name, "--repeats", str(args.repeats)],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
    memory = {} if args.no_memory else {engine: serving_memory(engine) for engine in ("transformers", "llamacpp")}

    def summary(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
        return (f"{statistics.median(values) * scale:.{digits}f} "
                f"[{min(values) * scale:.{digits}f}–{max(values) * scale:.{digits}f}]")

    base = statistics.median(results["transformers"]["decode"])
    bare = statistics.median(results["llamacpp-bare"]["decode"])
    print("| configuration | decode tok/s median [range] | vs transformers | vs bare llama.cpp | "
          "TTFT 500-token prompt, ms |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        rate = statistics.median(r["decode"])
        print(f"| {name} | {summary(r['decode'])} | {rate / base:.2f}x | {rate / bare:.2f}x | "
              f"{summary(r['ttft'], 1000, 0)} |")
    for engine, m in memory.items():
        print(f"\napp serving {m['variants']} variants on {engine}: resident memory {m['rss_mib']:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "memory": memory}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
