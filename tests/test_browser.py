"""Browser test: Debian's Chromium, driven by Playwright, against the real app on the embedded model.

Playwright's own browser download cannot work offline, so it launches /usr/bin/chromium (installed by
`make test`). A missing Chromium fails this test rather than skipping it: CI must prove the app works.
"""

import json
import os
import re
import socket
import sqlite3
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
FOOTER = re.compile(r"Sources:|Retrieved \(not cited\):")
"""The passages under a finished answer: those it cites, or every one retrieved when it cites none."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feedback")


@pytest.fixture(scope="module")
def app_url(feedback_dir):
    port = free_port()
    log = open(os.devnull, "w")
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--set", "generation.max_new_tokens=64",
         "--variant", "configs/tidewater.yaml", "--arena", "configs/tidewater.yaml", "--arena", "bench/bare.yaml",
         "--data", str(feedback_dir)],
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
            if FOOTER.search(text):
                break
            time.sleep(0.05)
        final = bot.inner_text()
        browser.close()
    assert FOOTER.search(final), final
    assert "returns-policy.md" in final
    assert len(lengths) >= 3 and lengths == sorted(lengths), lengths  # grew step by step, never shrank
    assert len(FOOTER.split(final)[0].strip()) > 0


def open_app(p, url):
    assert os.path.exists(CHROMIUM), "Debian's chromium is not installed (make test installs it)"
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#message textarea").wait_for(timeout=60_000)
    return browser, page


def rows(feedback_dir, table):
    with sqlite3.connect(feedback_dir / "feedback.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(f"SELECT * FROM {table}")]


def wait_for(condition, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_thumbs_down_lands_in_sqlite(app_url, feedback_dir):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = open_app(p, app_url)
        box = page.locator("#message textarea")
        box.fill("Can I pause my coffee subscription?")
        box.press("Enter")
        bot = page.locator('#chat [data-testid="bot"]').last
        bot.wait_for(timeout=180_000)
        assert wait_for(lambda: FOOTER.search(bot.inner_text()), 300)
        page.locator("#chat").get_by_label("Dislike").last.click()
        assert wait_for(lambda: len(rows(feedback_dir, "ratings")) == 1)
        page.locator("#comment textarea").fill("It did not say for how long.")
        page.locator("#comment-send").click()
        assert wait_for(lambda: rows(feedback_dir, "ratings")[0]["comment"] == "It did not say for how long.")
        browser.close()
    rating, = rows(feedback_dir, "ratings")
    assert rating["rating"] == -1 and rating["variant"] == "tidewater-rag" and len(rating["variant_hash"]) == 12
    assert json.loads(rating["conversation"]) == [{"role": "user", "content": "Can I pause my coffee subscription?"}]
    assert rating["answer"] and not FOOTER.search(rating["answer"])


def test_arena_vote_hides_names_until_voted_and_updates_the_leaderboard(app_url, feedback_dir):
    from playwright.sync_api import sync_playwright

    names = ("tidewater-rag", "bare-prompt")
    with sync_playwright() as p:
        browser, page = open_app(p, app_url)
        page.get_by_role("tab", name="Arena").click()
        box = page.locator("#arena-message textarea")
        box.wait_for(timeout=30_000)
        box.fill("Do you ship to Canada?")
        box.press("Enter")
        reveal = page.locator("#reveal")
        assert wait_for(lambda: "vote below" in reveal.inner_text(), 400)
        shown = page.locator("#arena-a").inner_text() + page.locator("#arena-b").inner_text() + reveal.inner_text()
        assert not any(name in shown for name in names)  # anonymous until the vote
        page.locator("#vote-a").click()
        assert wait_for(lambda: "A was" in reveal.inner_text())
        text = reveal.inner_text()
        assert all(name in text for name in names)  # revealed after the vote
        page.get_by_role("tab", name="Leaderboard").click()
        board = page.locator("#leaderboard")
        assert wait_for(lambda: all(name in board.inner_text() for name in names))
        browser.close()
    vote, = rows(feedback_dir, "votes")
    assert vote["outcome"] == "a" and {vote["variant_a"], vote["variant_b"]} == set(names)
    assert len(vote["hash_a"]) == len(vote["hash_b"]) == 12 and vote["hash_a"] != vote["hash_b"]
    assert f"A was {vote['variant_a']}" in text.replace("*", "")
