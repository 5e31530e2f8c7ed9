"""`make demo`, the README's first command, started the way it starts: `python app.py` with no --variant, so
the promoted evaluation winner on its default engine, with the real embedded model. One question through the
OpenAI-compatible API must come back answered by the winner."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_command() -> list[str]:
    """The Makefile's demo recipe, read from the Makefile itself (so that the test follows it)."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t(.+)$", makefile, re.M).group(1)
    assert recipe.split() == ["GRADIO_ANALYTICS_ENABLED=False", "$(PY)", "app.py", "--port", "$(PORT)"], recipe
    return [sys.executable, "app.py"]


def test_make_demo_serves_the_promoted_winner_and_answers(tmp_path):
    import httpx

    from assistant.serve.winner import served_variant_file
    from assistant.variants import load_variant

    winner, _ = served_variant_file(None, ROOT / "eval" / "reports")  # the promoted winner, as the app serves
    assert winner.name == "winner.yaml", "the repo has no servable evaluation winner"
    expected = load_variant(winner)
    port = free_port()
    log = tmp_path / "demo.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        server = subprocess.Popen(demo_command() + ["--port", str(port)], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 600
        models = None
        while time.time() < deadline and server.poll() is None:
            try:
                models = httpx.get(f"{base}/models", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(1)
        assert models is not None and models.status_code == 200, log.read_text()
        served = [m["id"] for m in models.json()["data"]]
        assert served[0] == expected.name, (served, log.read_text())
        assert f"serving {expected.name} ({expected.variant_hash()}) from {winner}" in log.read_text()
        answer = httpx.post(f"{base}/chat/completions", timeout=600, json={
            "model": expected.name, "max_tokens": 24,
            "messages": [{"role": "user", "content": "Can I return an opened grinder?"}]})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == expected.name
        assert body["choices"][0]["message"]["content"].strip(), body
        assert body["usage"]["completion_tokens"] > 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
