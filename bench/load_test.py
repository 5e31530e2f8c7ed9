"""Load test on loopback: N concurrent clients chat and vote against a running app for a bounded time.

Each client repeats, until the time is up: a streamed chat completion through the OpenAI-compatible API
(time to first token measured at the client), then an arena round in the Gradio app followed by a random
vote. At the end every vote the clients saw accepted must be in the feedback database, and no request
may have failed. Prints p50/p95 time to first token and throughput as a Markdown table.

    .venv/bin/python bench/load_test.py --clients 20 --seconds 60 -- --set generation.max_new_tokens=32
    (arguments after -- go to app.py; by default it serves the demo variant with a two-variant arena)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "How long do I have to return a grinder?",
    "My espresso machine shows error E3, what does it mean?",
    "Can I pause my coffee subscription?",
    "Do you ship to Canada?",
    "How do I track my order?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(app_args: list[str], data: Path, port: int, timeout: float = 300) -> subprocess.Popen:
    log = open(data / "app.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--data", str(data),
                             *app_args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited during start-up:\n{(data / 'app.log').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the app did not start in time")


def warm_up(url: str) -> str:
    """One request that waits for the model to load; returns the served model's name."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    model = client.models.list().data[0].id
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}])
    return model


def client_loop(number: int, url: str, model: str, deadline: float, results: dict, lock: threading.Lock) -> None:
    from gradio_client import Client
    from openai import OpenAI

    rng = random.Random(number)
    api = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    app = Client(url, verbose=False)
    while time.time() < deadline:
        question = rng.choice(QUESTIONS)
        try:
            started = time.perf_counter()
            first = None
            for chunk in api.chat.completions.create(model=model, stream=True,
                                                     messages=[{"role": "user", "content": question}]):
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - started
            with lock:
                results["chats"] += 1
                if first is not None:
                    results["first_token"].append(first)
            app.predict(question, api_name="/arena")
            outcome = rng.choice(["a", "b", "tie", "both_bad"])
            app.predict(api_name=f"/vote_{outcome}")
            with lock:
                results["votes"] += 1
        except Exception as exc:  # every failure is counted and shown; none is allowed
            with lock:
                results["errors"].append(f"client {number}: {type(exc).__name__}: {exc}")


def run(clients: int, seconds: float, app_args: list[str], data: Path) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_app(app_args, data, port)
    results = {"chats": 0, "votes": 0, "errors": [], "first_token": []}
    try:
        model = warm_up(url)
        lock = threading.Lock()
        began = time.perf_counter()
        deadline = time.time() + seconds
        threads = [threading.Thread(target=client_loop, args=(n, url, model, deadline, results, lock))
                   for n in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - began
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # counted: a server that does not stop is a bug to see
            proc.kill()
            proc.wait()
            results["errors"].append("the app did not stop within 60 s of SIGTERM")
    with sqlite3.connect(data / "feedback.db") as db:
        stored = db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
    ttft = sorted(results["first_token"])

    def pct(p: float) -> float:
        return ttft[min(len(ttft) - 1, int(round(p / 100 * (len(ttft) - 1))))] if ttft else float("nan")

    return {"clients": clients, "seconds": round(wall, 1), "chats": results["chats"], "votes_sent": results["votes"],
            "votes_stored": stored, "errors": results["errors"], "ttft_p50": pct(50), "ttft_p95": pct(95),
            "chats_per_minute": results["chats"] / wall * 60}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    app_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description="Concurrent chat-and-vote load test of the app on loopback.")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    parser.add_argument("--seconds", type=float, default=60, help="how long clients keep starting rounds (default 60)")
    parser.add_argument("--data", help="feedback folder for the app (default: a fresh temporary folder)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--engines", metavar="A,B",
                        help="run the whole test once per engine, one after another, and compare (e.g. "
                        "transformers,llamacpp); default: the app's own choice")
    args = parser.parse_args(own)
    if not any(a == "--variant" for a in app_args):
        app_args = ["--variant", str(ROOT / "configs" / "tidewater.yaml"), "--arena", str(ROOT / "configs" / "tidewater.yaml"),
                    "--arena", str(ROOT / "bench" / "bare.yaml"), *app_args]
    engines = args.engines.split(",") if args.engines else [None]
    results = []
    for engine in engines:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(args.data) / (engine or "app") if args.data else Path(tmp)
            data.mkdir(parents=True, exist_ok=True)
            result = run(args.clients, args.seconds, app_args + (["--engine", engine] if engine else []), data)
            result["engine"] = engine or "app default"
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "errors"}), file=sys.stderr, flush=True)
            if result["errors"]:
                print((data / "app.log").read_text()[-3000:], file=sys.stderr)
    print("| engine | clients | seconds | chats | votes sent | votes stored | errors | TTFT p50 | TTFT p95 | chats/min |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        print(f"| {result['engine']} | {result['clients']} | {result['seconds']} | {result['chats']} | "
              f"{result['votes_sent']} | {result['votes_stored']} | {len(result['errors'])} | "
              f"{result['ttft_p50']:.2f} s | {result['ttft_p95']:.2f} s | {result['chats_per_minute']:.1f} |")
        for error in result["errors"][:10]:
            print(error, file=sys.stderr)
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(f"\n{last['engine']} against {first['engine']}: {last['chats_per_minute'] / first['chats_per_minute']:.1f}x "
              f"chats per minute, TTFT p50 {first['ttft_p50'] / last['ttft_p50']:.1f}x shorter")
    if args.json:
        Path(args.json).write_text(json.dumps(results if len(results) > 1 else results[0], indent=1))
    ok = all(not r["errors"] and r["votes_stored"] == r["votes_sent"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
