"""Crash safety: real commands killed with SIGKILL at a random moment, then run again.

A harness starts the command in its own process group, kills the whole group after a delay drawn from a
seeded generator (so a failure can be replayed), and the test checks what a user would find afterwards:
the rerun completes, nothing half-written is visible, and nothing acknowledged is lost.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_evaluation import QUESTIONS, write_cases, write_suite
from tests.test_train import workspace  # noqa: F401  (the tiny training workspace fixture)

REPORT_FILES = {"report.md", "report.html", "results.jsonl", "winner.yaml", "metrics.png"}


def run_and_kill(command: list[str], delay: float, env: dict | None = None) -> bool:
    """Runs ``command`` and SIGKILLs its process group after ``delay`` seconds; True if it was killed
    (False: it finished first)."""
    proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def visible(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []


def test_killed_evaluation_leaves_no_half_report_and_no_corrupt_cache(tmp_path, tiny_model_dir):
    rows = [{"id": f"c{i}", "messages": [{"role": "user", "content": f"{q} ({i})"}], "reference": r, "label": label}
            for i, (q, r, label) in enumerate(QUESTIONS * 8)]
    write_cases(tmp_path / "cases.jsonl", rows)
    suite = write_suite(tmp_path, tiny_model_dir, metrics="[rouge_l, exact_match]")
    command = [sys.executable, "-m", "assistant", "eval", str(suite), "--quiet"]
    env = {"ASSISTANT_CACHE": str(tmp_path / "cache")}
    started = time.perf_counter()
    reference = subprocess.run(command + ["--out", str(tmp_path / "reference"), "--no-cache"], cwd=ROOT,
                               capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    duration = time.perf_counter() - started
    rng = random.Random(20261130)
    reports = tmp_path / "reports"
    for _ in range(3):
        run_and_kill(command + ["--out", str(reports)], rng.uniform(0.3, 1.0) * duration, env)
        for folder in visible(reports):  # a report folder is either absent or whole
            assert REPORT_FILES <= {p.name for p in folder.iterdir()}, folder
        for entry in (tmp_path / "cache").rglob("*.json"):
            if not entry.name.startswith("."):
                json.loads(entry.read_text())  # never a torn cache entry
    final = subprocess.run(command + ["--out", str(reports)], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, **env}, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    newest = max(visible(reports))
    answers = {r["variant"] + r["case"]: r["answer"] for r in map(json.loads, (newest / "results.jsonl").open())}
    expected = {r["variant"] + r["case"]: r["answer"]
                for r in map(json.loads, (visible(tmp_path / "reference")[0] / "results.jsonl").open())}
    assert answers == expected  # cached answers from killed runs are the answers an unbroken run gives


def _start_app(data: Path, variant: Path, port: int) -> subprocess.Popen:
    import urllib.request

    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--data", str(data), "--variant",
                             str(variant), "--arena", str(variant), "--arena", str(variant.with_name("other.yaml")),
                             "--reports", str(data / "none")], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    deadline = time.time() + 180
    while time.time() < deadline:
        assert proc.poll() is None, "the app exited during start-up"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return proc
        except OSError:
            time.sleep(0.3)
    raise AssertionError("the app did not start")


def test_killed_server_keeps_every_acknowledged_vote(tmp_path, tiny_model_dir):
    from gradio_client import Client

    from tests.test_api import free_port

    for name in ("tiny", "other"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "model": {"base": str(tiny_model_dir), "quantization": "none", "device": "cpu"},
            "generation": {"max_new_tokens": 3 if name == "tiny" else 4}}))
    data = tmp_path / "feedback"
    port = free_port()
    proc = _start_app(data, tmp_path / "tiny.yaml", port)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        try:
            app = Client(f"http://127.0.0.1:{port}/", verbose=False)
            for round_ in range(1000):
                if stop.is_set():
                    return
                marker = f"vote-{number}-{round_}"
                app.predict(f"question {marker}", api_name="/arena")
                app.predict(api_name="/vote_a")
                with lock:
                    acknowledged.append(marker)
        except Exception:  # the server was killed under it
            return

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(random.Random(7).uniform(6, 12))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acknowledged) >= 4, "too few votes before the kill to prove anything"

    proc = _start_app(data, tmp_path / "tiny.yaml", port)  # restarts on the same database
    try:
        with sqlite3.connect(data / "feedback.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = "\n".join(row[0] for row in db.execute("SELECT conversation FROM votes"))
        missing = [m for m in acknowledged if f"question {m}\"" not in stored]
        assert not missing, missing
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_killed_training_resumes_and_never_shows_a_half_adapter(workspace):  # noqa: F811
    command = [sys.executable, "-m", "assistant", "train", str(workspace / "train.yaml"), "--quiet",
               "--training.max_steps", "12", "--training.eval_every", "3"]
    rng = random.Random(11)
    adapter = workspace / "adapters" / "tiny-adapter"
    checkpoints = workspace / "runs" / "tiny-adapter" / "checkpoints"
    for delay in sorted(rng.uniform(4, 25) for _ in range(3)):
        killed = run_and_kill(command + (["--resume"] if _any_checkpoint(checkpoints) else []), delay)
        for folder in visible(adapter.parent):  # an adapter folder is either absent or whole
            assert {"adapter_model.safetensors", "adapter_config.json", "card.yaml", "variant.yaml"} <= {
                p.name for p in folder.iterdir()}, folder
        if not killed:
            break
    if not adapter.exists():
        resume = ["--resume"] if _any_checkpoint(checkpoints) else []
        result = subprocess.run(command + resume, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    card = yaml.safe_load((adapter / "card.yaml").read_text())
    assert card["training"]["steps"] == 12


def _any_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and any((p / "trainer_state.json").is_file() for p in folder.glob("checkpoint-*"))


@pytest.mark.integration
def test_killed_first_run_conversion_is_redone_whole(tmp_path):
    cache = tmp_path / "cache"
    command = [sys.executable, "-c", "from assistant.models.loading import resolve_base; "
               "print(resolve_base('smollm2-135m-instruct').location)"]
    env = {"ASSISTANT_CACHE": str(cache)}
    rng = random.Random(3)
    for _ in range(2):
        run_and_kill(command, rng.uniform(3, 12), env)
        for folder in visible(cache / "models"):  # a converted model is either absent or whole
            assert {"config.json", "model.safetensors", "SOURCE"} <= {p.name for p in folder.iterdir()}, folder
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    location = Path(result.stdout.strip().splitlines()[-1])
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(location).num_hidden_layers == 30
