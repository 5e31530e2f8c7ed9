"""The app's wiring on the tiny model: lazy import, history handling, and the streamed /respond endpoint."""

import subprocess
import sys

from tests.conftest import ROOT


def test_importing_the_app_loads_no_model_and_no_torch():
    code = "import sys, app; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_model_history_drops_the_sources_footer_and_flattens_parts():
    import app

    chat = [
        {"role": "user", "content": [{"type": "text", "text": "How long?"}]},
        {"role": "assistant", "content": "30 days." + app.SOURCES_MARK + "[1] returns.md - Window"},
        {"role": "assistant", "content": ""},
    ]
    assert app.to_model_history(chat) == [
        {"role": "user", "content": "How long?"},
        {"role": "assistant", "content": "30 days."},
    ]


def test_respond_streams_and_cites_passages(tiny_variant):
    from gradio_client import Client

    import app
    from assistant.generate import Bot

    bot = Bot(tiny_variant)
    demo = app.build_app(bot, title="Acme")
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        job = client.submit("How many days to return a grinder?", [], api_name="/respond")
        updates = [out for out in job]
        final_chat, panel = job.result()[1], job.result()[2]
    finally:
        demo.close()
    assert len(updates) >= 3  # placeholder, at least one streamed piece, final answer with sources
    answer = final_chat[-1]["content"][0]["text"]
    assert final_chat[-2]["content"][0]["text"] == "How many days to return a grinder?"
    assert "**Sources:** [1] returns.md - Returns > Window" in answer
    assert "30 days" in panel
    expected = bot.reply([{"role": "user", "content": "How many days to return a grinder?"}]).text
    assert answer.split(app.SOURCES_MARK)[0].strip() == expected  # the app serves the one generation path
