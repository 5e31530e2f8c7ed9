"""Which GGUF weight type to serve the embedded base in: prefill and decode speed of llama.cpp per type.

    .venv/bin/python bench/gguf_types.py [--repeats 3]

The package's own Q4_1 file against Q8_0, F16 (and F32) files written by ``assistant.models.export.base_to_gguf`` from
the converted safetensors folder. Each type: llama.cpp in process (xllamacpp), 2 threads, a 500-token
prompt of support documents with prompt caching off, 64 new tokens with end-of-turn ignored; llama.cpp's
own timings (prompt tokens/s, predicted tokens/s). Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    import xllamacpp
    from transformers import AutoTokenizer

    from assistant.config import EMBEDDED_BASE
    from assistant.engines import cpu_threads
    from assistant.models.export import base_to_gguf
    from assistant.models.loading import embedded_gguf_path, resolve_base

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed requests per type (default 3)")
    parser.add_argument("--types", default="q4_1,q8_0,f16,f32", help="types to compare (default all)")
    args = parser.parse_args()
    folder = Path(resolve_base(EMBEDDED_BASE).location)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = " ".join(p.read_text() for p in sorted((ROOT / "data" / "tidewater" / "docs").glob("*.md")))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    print("| GGUF type | file MiB | prefill tok/s median [range] | decode tok/s median [range] |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.types.split(","):
            path = embedded_gguf_path() if kind == "q4_1" else base_to_gguf(folder, Path(tmp) / f"{kind}.gguf", kind)
            params = xllamacpp.CommonParams()
            params.model.path = str(path)
            params.n_ctx = 2048
            params.verbosity = -1
            params.cpuparams.n_threads = params.cpuparams_batch.n_threads = min(2, cpu_threads())
            server = xllamacpp.Server(params)
            prefill, decode = [], []
            for i in range(args.repeats + 1):
                prompt = ids[1000 * i : 1000 * i + 500]
                result = server.handle_completions({"prompt": prompt, "max_tokens": 64, "temperature": 0,
                                                    "cache_prompt": False, "ignore_eos": True})
                if i:  # the first request warms up
                    prefill.append(result["timings"]["prompt_per_second"])
                    decode.append(result["timings"]["predicted_per_second"])
            del server

            def cell(values: list[float]) -> str:
                return f"{statistics.median(values):.0f} [{min(values):.0f}–{max(values):.0f}]"

            print(f"| {kind} | {path.stat().st_size / 2**20:.0f} | {cell(prefill)} | {cell(decode)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
