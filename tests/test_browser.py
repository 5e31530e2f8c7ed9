"""Browser test: Debian's Chromium, driven by Playwright, against the real app on the embedded model.

Playwright's own browser download cannot work offline, so it launches /usr/bin/chromium (installed by
`make test`). A missing Chromium fails this test rather than skipping it: CI must prove the app works.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    port = free_port()
    log = open(os.devnull, "w")
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--set", "generation.max_new_tokens=64"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        assert proc.poll() is None, "the app exited during start-up"
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("the app did not start within 180 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_question_gets_a_streamed_answer_with_sources(app_url):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Debian's chromium is not installed (make test installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(app_url, wait_until="domcontentloaded")
        box = page.locator("#message textarea")
        box.wait_for(timeout=60_000)
        box.fill("How many days do I have to return a grinder?")
        box.press("Enter")

        bot = page.locator('[data-testid="bot"]').last
        bot.wait_for(timeout=180_000)
        # Sample the reply while it grows: a streamed answer is seen at several lengths before it ends.
        lengths = []
        deadline = time.time() + 300
        while time.time() < deadline:
            text = bot.inner_text()
            if text and (not lengths or len(text) != lengths[-1]):
                lengths.append(len(text))
            if "Sources:" in text:
                break
            time.sleep(0.05)
        final = bot.inner_text()
        browser.close()
    assert "Sources:" in final, final
    assert "returns-policy.md" in final
    assert len(lengths) >= 3 and lengths == sorted(lengths), lengths  # grew step by step, never shrank
    assert len(final.split("Sources:")[0].strip()) > 0
