"""Soak test: the real server under a steady load it can sustain, for a long time, watched minute by minute.

    .venv/bin/python bench/soak.py [--minutes 30] [--clients 4] [--json PATH] [--plot PATH] [-- app.py options]

Clients on loopback, each in a loop: a streamed chat through the OpenAI-compatible API; an arena round in
the Gradio app and a vote; and every third round an API stream that the client leaves after its first
piece. Per minute it records the latency of each completed chat (p50, p95), the server's resident memory
and every error. At the end: the errors, memory growth after the first two minutes (warm-up), the p95
trend (least-squares slope over the minutes after warm-up), a Markdown table and a plot. Exit 1 on any
error or lost vote. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from load_test import QUESTIONS, free_port, start_app, warm_up  # noqa: E402


def rss_mib(pid: int) -> tuple[float, float, float]:
    """Resident memory of a process in MiB: all of it, its anonymous part (heaps: Python, torch, llama.cpp's
    KV cache) and its file-backed part (mapped weights and libraries)."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return tuple(int(status[key].split()[0]) / 1024 for key in ("VmRSS", "RssAnon", "RssFile"))


def client_loop(number: int, url: str, model: str, deadline: float, log: dict, lock: threading.Lock) -> None:
    from gradio_client import Client
    from openai import OpenAI

    rng = random.Random(number)
    api = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    app = Client(url, verbose=False)
    round_ = 0
    while time.time() < deadline:
        round_ += 1
        question = rng.choice(QUESTIONS)
        try:
            started = time.perf_counter()
            for _ in api.chat.completions.create(model=model, stream=True,
                                                 messages=[{"role": "user", "content": question}]):
                pass
            with lock:
                log["chats"].append((time.time(), time.perf_counter() - started))
            app.predict(question, api_name="/arena")
            app.predict(api_name=f"/vote_{rng.choice(['a', 'b', 'tie', 'both_bad'])}")
            with lock:
                log["votes"] += 1
            if round_ % 3 == 0:  # a client that leaves mid-stream
                stream = api.chat.completions.create(model=model, stream=True,
                                                     messages=[{"role": "user", "content": question}])
                next(iter(stream), None)
                stream.close()
                with lock:
                    log["left"] += 1
        except Exception as exc:  # every failure is counted and shown; none is allowed
            with lock:
                log["errors"].append(f"{time.strftime('%H:%M:%S')} client {number}: {type(exc).__name__}: {exc}")


def main() -> int:
    argv = sys.argv[1:]
    app_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30, help="how long the load runs (default 30)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--warm-up", type=float, default=2, help="minutes left out of the memory growth (default 2)")
    parser.add_argument("--json", help="write the per-minute figures to this JSON file")
    parser.add_argument("--plot", help="write latency and memory per minute to this PNG file")
    args = parser.parse_args(own)
    if not any(a == "--variant" for a in app_args):
        app_args = ["--variant", str(ROOT / "configs" / "tidewater.yaml"), "--arena", str(ROOT / "configs" / "tidewater.yaml"),
                    "--arena", str(ROOT / "bench" / "bare.yaml"), "--set", "generation.max_new_tokens=48", *app_args]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_app(app_args, data, port)
        log = {"chats": [], "votes": 0, "left": 0, "errors": []}
        memory: list[tuple[float, float]] = []
        lock = threading.Lock()
        try:
            model = warm_up(url)
            began = time.time()
            deadline = began + args.minutes * 60
            threads = [threading.Thread(target=client_loop, args=(n, url, model, deadline, log, lock), daemon=True)
                       for n in range(args.clients)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                memory.append((time.time(), rss_mib(proc.pid)))
                time.sleep(10)
            with sqlite3.connect(data / "feedback.db") as db:
                stored = db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    minutes = []
    for m in range(int(args.minutes + 0.999)):
        lo, hi = began + 60 * m, began + 60 * (m + 1)
        latencies = sorted(s for t, s in log["chats"] if lo <= t < hi)
        rss = [r for t, r in memory if lo <= t < hi]
        if not latencies or not rss:
            continue
        peak = max(rss)  # the minute's highest sample, with its anonymous and file-backed parts
        minutes.append({"minute": m + 1, "chats": len(latencies), "p50": statistics.median(latencies),
                        "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
                        "rss_mib": peak[0], "anon_mib": peak[1], "file_mib": peak[2]})
    steady = [m for m in minutes if m["minute"] > args.warm_up] or minutes
    growth = (steady[-1]["rss_mib"] - steady[0]["rss_mib"]) / steady[0]["rss_mib"] * 100
    xs = [m["minute"] for m in steady]
    ys = [m["p95"] for m in steady]
    slope = (statistics.linear_regression(xs, ys).slope if len(xs) > 1 else 0.0)
    print(f"{args.minutes:g} minutes, {args.clients} clients: {len(log['chats'])} chats, {log['votes']} votes "
          f"({stored} stored), {log['left']} streams left mid-way, {len(log['errors'])} errors")
    print(f"resident memory after warm-up: {steady[0]['rss_mib']:.0f} -> {steady[-1]['rss_mib']:.0f} MiB "
          f"({growth:+.1f}%); p95 latency trend {slope:+.3f} s per minute\n")
    print("| minute | chats | latency p50 s | latency p95 s | resident MiB | of it anonymous | of it files |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for m in minutes:
        print(f"| {m['minute']} | {m['chats']} | {m['p50']:.2f} | {m['p95']:.2f} | {m['rss_mib']:.0f} "
              f"| {m['anon_mib']:.0f} | {m['file_mib']:.0f} |")
    for error in log["errors"][:20]:
        print(error, file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"minutes": minutes, "errors": log["errors"], "votes": log["votes"],
                                               "stored": stored, "left": log["left"], "growth_percent": growth,
                                               "p95_slope": slope}, indent=1))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
        top.plot([m["minute"] for m in minutes], [m["p50"] for m in minutes], marker="o", label="p50")
        top.plot([m["minute"] for m in minutes], [m["p95"] for m in minutes], marker="o", label="p95")
        top.set_ylabel("chat latency, s")
        top.legend()
        bottom.plot([m["minute"] for m in minutes], [m["rss_mib"] for m in minutes], marker="o", color="tab:red")
        bottom.set_ylabel("server resident memory, MiB")
        bottom.set_xlabel("minute")
        fig.suptitle(f"Soak: {args.clients} clients, {args.minutes:g} minutes, {len(log['errors'])} errors")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
    return 0 if not log["errors"] and stored == log["votes"] else 1


if __name__ == "__main__":
    sys.exit(main())
