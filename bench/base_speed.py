"""The catalog's bases side by side on this machine: bare llama.cpp decode speed and time to the first token
of a 600-token prompt, one process, one model after another (the figures in assistant/models/catalog.yaml).

    .venv/bin/python bench/base_speed.py [--models smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct] [--json PATH]

Method
- Each installed catalog model is served by the llama.cpp engine as the project serves it (SmolLM2 written
  once as Q8_0, the Qwen files as they are), 2 threads on the 2-core CPU, one request at a time.
- Prompt: 600 tokens of the demo's documents (a different slice per request, so that no prefix is cached),
  then up to 128 new tokens, greedy; first token from the call to the first piece; decode rate
  (n - 1) / (t_last - t_first) over the answer's tokens after the first.
- Three requests per model after a warm-up; medians and ranges. Nothing else may run meanwhile.
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


def prompt_ids(tokenizer, start: int, length: int = 600) -> list[int]:
    """A chat prompt of about ``length`` tokens: a slice of the demo documents, then a question."""
    text = " ".join(p.read_text() for p in sorted((ROOT / "data" / "tidewater" / "docs").glob("*.md")))
    words = text.split()[start * 400:]
    body = " ".join(words)
    ids = tokenizer(body, add_special_tokens=False)["input_ids"][: length - 40]
    passage = tokenizer.decode(ids)
    messages = [{"role": "system", "content": "Answer from these notes.\n" + passage},
                {"role": "user", "content": "Summarise the notes above in a few sentences."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def measure(name: str, rounds: int) -> dict:
    from assistant.engines import Sampling, shared_engine
    from assistant.models.loading import shared_tokenizer
    from assistant.variants import load_variant

    variant = load_variant(None, [f"model.base={name}", "model.quantization=none", "serving.engine=llamacpp",
                                  "serving.parallel=1", "serving.context_tokens=2048"])
    engine = shared_engine(variant, "llamacpp")
    engine.add_adapter(None, variant)
    engine.warm()
    tokenizer = shared_tokenizer(name)[0]
    sampling = Sampling.of(variant.generation, max_new_tokens=128, temperature=0.0)
    firsts, rates, lengths = [], [], []
    for request in range(rounds + 1):
        ids = prompt_ids(tokenizer, request)
        stats: dict = {}
        began = time.perf_counter()
        first = last = None
        for _ in engine.stream(ids, None, sampling, stats):
            last = time.perf_counter()
            first = first or last
        if request == 0:
            continue  # warm-up
        firsts.append(first - began)
        lengths.append(len(ids))
        if stats["new_tokens"] > 8:
            rates.append((stats["new_tokens"] - 1) / (last - first))
    return {"prompt_tokens": statistics.median(lengths), "first_token_seconds": statistics.median(firsts),
            "first_token_range": [min(firsts), max(firsts)], "decode_tokens_per_second": statistics.median(rates),
            "decode_range": [min(rates), max(rates)], "gguf": engine.gguf.name}


def main() -> None:
    from assistant.models.catalog import CATALOG

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(n for n, m in CATALOG.items() if m.file()),
                        help="catalog names, comma-separated (default: every installed one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "bench" / "base_speed.json"))
    args = parser.parse_args()
    results = {}
    for name in args.models.split(","):
        results[name] = measure(name, args.rounds)
        r = results[name]
        print(f"{name}: decode {r['decode_tokens_per_second']:.1f} tok/s ({r['decode_range'][0]:.1f}-"
              f"{r['decode_range'][1]:.1f}), first token {r['first_token_seconds']:.2f} s for {r['prompt_tokens']:.0f} "
              f"prompt tokens ({r['first_token_range'][0]:.2f}-{r['first_token_range'][1]:.2f}); {r['gguf']}", flush=True)
    Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
