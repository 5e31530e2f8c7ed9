"""Decode throughput, time to first token and the memory-bandwidth bound for the embedded base model.

Method
------
Each configuration of the embedded model (SmolLM2-135M-Instruct) is loaded with
``assistant.models.loading.load_base`` and timed with Hugging Face ``model.generate`` directly: greedy, batch 1,
under ``torch.inference_mode()``, with the library's default thread count.

* Decode throughput. From the same short chat prompt, generation is timed once for 1 new token
  (prefill plus first token, ``t1``) and once for N new tokens (``tN``, N = 128 by default); both are
  forced to exactly that length with ``min_new_tokens = max_new_tokens``. The decode rate is
  ``(N - 1) / (tN - t1)`` (which ``t1``: see Repeats), so the prefill is left out.
* Time to first token. A prompt of exactly P tokens (P = 500 by default: a paragraph of support text,
  repeated and cut at P token ids) is timed with ``max_new_tokens=1``.
* Contention. Each sample is printed with the number of cores other processes kept busy meanwhile
  (from /proc/stat): a sample taken while something else ran is visible as such.
* Repeats. Every timing is taken once as a warm-up, then ``--repeats`` times. The repeats are
  interleaved (round r times every configuration, in an order rotated each round) so that slow
  phases of a noisy machine (on a 2-core CPU, OpenMP spin-waiting can flip runs between fast and
  slow) are spread over all configurations instead of hitting one. Medians and min-max ranges are
  reported. The decode rate of round r is ``(N - 1) / (tN_r - median t1)``: ``t1`` is a short timing,
  and one slow ``t1`` subtracted from a fast ``tN`` would give a rate above anything the machine can do.

The bound
---------
At batch 1 every decoded token reads every weight once, while the arithmetic per byte read is small,
so decode speed is capped by memory bandwidth: ``bound tok/s = bandwidth / weight bytes per token``.

* Bandwidth is measured in the same process by timing ``dst.copy_(src)`` on a large fp32 tensor
  (512 MiB by default), counting bytes read plus bytes written; one sample per round, median reported.
  This is what torch itself achieves for a streaming copy, not the hardware's peak.
* Weight bytes per token is the storage of all parameters and buffers, each tensor counted once. The
  tied input embedding / ``lm_head`` matrix is a single tensor: the embedding lookup reads only one row,
  but ``lm_head`` reads the whole matrix every token, so it counts once, in full. For bitsandbytes
  4-bit layers the packed uint8 weight plus its quantization state (absmax, nested absmax, codebooks)
  are counted, since dequantizing reads them all.
* The KV cache and activations are left out: they add reads, so the true cap is a little lower and
  the "% of bound" a little pessimistic.

Run ``python bench/decode.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import bitsandbytes
import torch
import transformers
from transformers.utils import logging as hf_logging

from assistant.models.loading import load_base

MODEL = "smollm2-135m-instruct"

# name -> (quantization, compute dtype) for load_base.
CPU_CONFIGS = {
    "fp32": ("none", "float32"),
    "bf16": ("none", "bfloat16"),
    "nf4": ("nf4", "float32"),
    "nf4-bf16": ("nf4", "bfloat16"),
}
# On a GPU, NF4 is run the way it is meant to be used there: bf16 compute.
CUDA_CONFIGS = {**CPU_CONFIGS, "nf4": ("nf4", "bfloat16")}

CHAT_MESSAGE = "Hi! I ordered a pair of headphones last week and they still have not arrived. What can I do?"

SUPPORT_PARAGRAPH = (
    "Thank you for contacting customer support. If your order has not arrived within the estimated "
    "delivery window, first check the tracking link in your confirmation email, since carriers often "
    "update the status a day or two after a delay. If the tracking shows the parcel as delivered but "
    "you cannot find it, look around your entrance, ask your neighbours and check with your building "
    "manager. Refunds for lost parcels are issued to the original payment method within five to seven "
    "business days once the carrier confirms the loss. To change a shipping address, reply before the "
    "order leaves our warehouse; after that we can only request a redirection from the carrier. "
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Measure decode tokens/s (prefill excluded), time to first token and the memory-bandwidth "
            f"bound for the embedded base model {MODEL!r}, in several precision/quantization configurations."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--configs",
        default="fp32,bf16,nf4",
        help=(
            "comma-separated configurations: fp32 (no quantization, float32), bf16 (no quantization, "
            "bfloat16), nf4 (bitsandbytes NF4 with float32 compute on cpu, bfloat16 compute on cuda), "
            "nf4-bf16 (NF4 with bfloat16 compute)"
        ),
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats of every measurement, after one warm-up"
    )
    parser.add_argument(
        "--new-tokens", type=int, default=128, help="tokens generated (exactly) for the decode-rate timing"
    )
    parser.add_argument(
        "--prompt-tokens", type=int, default=500, help="prompt length in tokens for the time-to-first-token timing"
    )
    parser.add_argument(
        "--bandwidth-mib", type=int, default=512, help="size of the fp32 tensor copied to measure memory bandwidth"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write all raw timings and results here")
    args = parser.parse_args()
    known = CUDA_CONFIGS if args.device == "cuda" else CPU_CONFIGS
    args.configs = [name.strip() for name in args.configs.split(",") if name.strip()]
    unknown = [name for name in args.configs if name not in known]
    if unknown or not args.configs:
        parser.error(f"unknown configuration(s) {unknown}; choose from {', '.join(known)}")
    if args.repeats < 1 or args.new_tokens < 2 or args.prompt_tokens < 1:
        parser.error("--repeats must be >= 1, --new-tokens >= 2, --prompt-tokens >= 1")
    return args


def environment(device: str) -> dict:
    """Versions and the machine, as printed above the results."""
    cpu_model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu_model == "unknown":
                cpu_model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        cpu_model = platform.processor() or "unknown"
    env = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bitsandbytes": bitsandbytes.__version__,
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # Without native bf16 instructions, bf16 matrix products on the CPU are emulated.
        "cpu_bf16_isa": sorted(flags & {"avx512_bf16", "amx_bf16"}),
        "device": device,
        "load_average_at_start": os.getloadavg(),
    }
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    return env


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (from /proc/stat), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Cores kept busy by other processes (and by hypervisor steal) while a block runs.

    With as many OpenMP threads as cores, one other busy process is enough to make spin-waiting threads
    miss their turns and slow a timing many times over, so each sample is printed with this figure.
    """

    def __enter__(self) -> "OtherLoad":
        self.start = (busy_cpu_seconds(), time.process_time(), time.perf_counter())
        return self

    def __exit__(self, *exc) -> None:
        busy, own, wall = busy_cpu_seconds(), time.process_time(), time.perf_counter()
        if busy is None or self.start[0] is None:
            self.cores = float("nan")
        else:
            other = (busy - self.start[0]) - (own - self.start[1])
            self.cores = max(other, 0.0) / (wall - self.start[2])


def sync(device: str) -> None:
    """Waits for queued GPU work, so that wall-clock timings cover it."""
    if device == "cuda":
        torch.cuda.synchronize()


def measure_bandwidth(device: str, mebibytes: int, copies: int = 5) -> float:
    """Streaming-copy bandwidth in GB/s (1e9 bytes): median of ``copies`` timed ``dst.copy_(src)``.

    Each copy reads and writes the tensor once, so it moves twice its size.
    """
    numel = mebibytes * 2**20 // 4
    src = torch.ones(numel, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: page faults are not bandwidth
    rates = []
    for _ in range(copies):
        sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        sync(device)
        rates.append(2 * numel * 4 / (time.perf_counter() - start) / 1e9)
    del src, dst
    return statistics.median(rates)


def weight_bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes of weights read to decode one token: every parameter and buffer once, plus 4-bit quant state.

    ``parameters()`` yields a shared tensor once, so the tied embedding / lm_head matrix is counted once.
    """
    seen: set[int] = set()
    total = 0

    def add(tensor: torch.Tensor | None) -> None:
        nonlocal total
        if tensor is not None and id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()

    for tensor in list(model.parameters()) + list(model.buffers()):
        add(tensor)
        state = getattr(tensor, "quant_state", None)
        # Params4bit keeps absmax and the codebook outside the module's parameters; with double
        # quantization absmax is itself quantized and has a nested state.
        while state is not None:
            add(state.absmax)
            add(state.code)
            add(state.offset if isinstance(state.offset, torch.Tensor) else None)
            state = state.state2 if getattr(state, "nested", False) else None
    return total


def chat_prompt_ids(tokenizer, device: str) -> torch.Tensor:
    """The short chat prompt, with the model's chat template, as a (1, n) tensor."""
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": CHAT_MESSAGE}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    return encoded["input_ids"].to(device)


def long_prompt_ids(tokenizer, length: int, device: str) -> torch.Tensor:
    """Exactly ``length`` token ids of support text, as a (1, length) tensor."""
    ids: list[int] = []
    while len(ids) < length:
        ids += tokenizer(SUPPORT_PARAGRAPH, add_special_tokens=False)["input_ids"]
    return torch.tensor([ids[:length]], device=device)


def timed_generate(model, input_ids: torch.Tensor, new_tokens: int, pad_token_id: int, device: str) -> float:
    """Seconds for greedy ``generate`` of exactly ``new_tokens`` tokens at batch 1."""
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            min_new_tokens=new_tokens,
            max_new_tokens=new_tokens,
            pad_token_id=pad_token_id,
        )
    sync(device)
    elapsed = time.perf_counter() - start
    produced = output.shape[1] - input_ids.shape[1]
    if produced != new_tokens:
        raise RuntimeError(f"generate produced {produced} tokens, {new_tokens} were forced")
    return elapsed


def summary(values: list[float]) -> dict:
    """Median, min and max of repeated samples."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    args = parse_args()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # greedy decoding with a sampling generation_config only warns
    configs = CUDA_CONFIGS if args.device == "cuda" else CPU_CONFIGS

    env = environment(args.device)
    print("## Environment\n")
    for key, value in env.items():
        print(f"- {key}: {value}")
    print()

    loaded = {}
    for name in args.configs:
        quantization, dtype = configs[name]
        start = time.perf_counter()
        base = load_base(MODEL, quantization=quantization, dtype=dtype, device=args.device)
        loaded[name] = {
            "base": base,
            "quantization": quantization,
            "dtype": dtype,
            "chat_ids": chat_prompt_ids(base.tokenizer, args.device),
            "long_ids": long_prompt_ids(base.tokenizer, args.prompt_tokens, args.device),
            "weight_bytes": weight_bytes_per_token(base.model),
            "memory_bytes": base.memory_bytes(),
            "t1": [],
            "tn": [],
            "ttft": [],
            "other_load": [],
        }
        print(f"loaded {name} ({quantization}, {dtype}) in {time.perf_counter() - start:.1f} s", flush=True)
    chat_tokens = next(iter(loaded.values()))["chat_ids"].shape[1]
    print(f"chat prompt: {chat_tokens} tokens; long prompt: {args.prompt_tokens} tokens\n")

    def measure(entry: dict, record: bool) -> None:
        base = entry["base"]
        pad = base.tokenizer.pad_token_id
        with OtherLoad() as other:
            t1 = timed_generate(base.model, entry["chat_ids"], 1, pad, args.device)
            tn = timed_generate(base.model, entry["chat_ids"], args.new_tokens, pad, args.device)
            ttft = timed_generate(base.model, entry["long_ids"], 1, pad, args.device)
        if record:
            entry["t1"].append(t1)
            entry["tn"].append(tn)
            entry["ttft"].append(ttft)
            entry["other_load"].append(other.cores)

    for name, entry in loaded.items():
        measure(entry, record=False)
        print(f"warm-up {name} done", flush=True)

    bandwidth_samples = []
    for round_index in range(args.repeats):
        bandwidth_samples.append(measure_bandwidth(args.device, args.bandwidth_mib))
        order = args.configs[round_index % len(args.configs) :] + args.configs[: round_index % len(args.configs)]
        for name in order:
            measure(loaded[name], record=True)
            entry = loaded[name]
            print(
                f"round {round_index + 1}/{args.repeats} {name}: t1 {entry['t1'][-1]:.3f} s, "
                f"t{args.new_tokens} {entry['tn'][-1]:.3f} s; "
                f"TTFT {entry['ttft'][-1] * 1000:.0f} ms; bandwidth {bandwidth_samples[-1]:.2f} GB/s; "
                f"other processes {entry['other_load'][-1]:.2f} cores busy",
                flush=True,
            )
    bandwidth = statistics.median(bandwidth_samples)

    results = {}
    for name, entry in loaded.items():
        prefill = statistics.median(entry["t1"])
        rates = [(args.new_tokens - 1) / (tn - prefill) for tn in entry["tn"]]
        bound = bandwidth * 1e9 / entry["weight_bytes"]
        decode = summary(rates)
        results[name] = {
            "quantization": entry["quantization"],
            "compute_dtype": entry["dtype"],
            "weight_bytes_per_token": entry["weight_bytes"],
            "memory_footprint_bytes": entry["memory_bytes"],
            "bound_tokens_per_s": bound,
            "decode_tokens_per_s": decode,
            "decode_fraction_of_bound": decode["median"] / bound,
            "ttft_s": summary(entry["ttft"]),
            "raw": {
                "t1_s": entry["t1"],
                f"t{args.new_tokens}_s": entry["tn"],
                "decode_tokens_per_s": rates,
                "ttft_s": entry["ttft"],
                "other_processes_cores_busy": entry["other_load"],
            },
        }

    print(
        f"\n## Results ({args.device}, batch 1, greedy, {args.new_tokens} new tokens, "
        f"TTFT with a {args.prompt_tokens}-token prompt, {args.repeats} repeats after 1 warm-up)\n"
    )
    print(
        f"Memory bandwidth (copy_ of {args.bandwidth_mib} MiB fp32, read + write): "
        f"median {bandwidth:.2f} GB/s [{min(bandwidth_samples):.2f}-{max(bandwidth_samples):.2f}]\n"
    )
    print(
        "| config | weight bytes/token (MB) | bound tok/s | decode tok/s median [range] | % of bound "
        f"| TTFT {args.prompt_tokens}-token prompt ms median [range] | footprint MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, result in results.items():
        decode, ttft = result["decode_tokens_per_s"], result["ttft_s"]
        print(
            f"| {name} | {result['weight_bytes_per_token'] / 1e6:.1f} | {result['bound_tokens_per_s']:.1f} "
            f"| {decode['median']:.2f} [{decode['min']:.2f}-{decode['max']:.2f}] "
            f"| {100 * result['decode_fraction_of_bound']:.0f}% "
            f"| {ttft['median'] * 1000:.0f} [{ttft['min'] * 1000:.0f}-{ttft['max'] * 1000:.0f}] "
            f"| {result['memory_footprint_bytes'] / 2**20:.1f} |"
        )

    if args.json:
        report = {
            "environment": env,
            "settings": {
                "model": MODEL,
                "configs": args.configs,
                "repeats": args.repeats,
                "new_tokens": args.new_tokens,
                "prompt_tokens": args.prompt_tokens,
                "chat_prompt_tokens": chat_tokens,
                "bandwidth_mib": args.bandwidth_mib,
            },
            "bandwidth_gb_per_s": {"median": bandwidth, "samples": bandwidth_samples},
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
