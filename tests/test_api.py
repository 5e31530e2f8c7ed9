"""The OpenAI-compatible endpoint, driven by the official openai client, on the tiny model."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from assistant.generate import Bot
from assistant.serve.api import Guards, Limits, LoginThrottle, add_openai_routes, check_basic_auth


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def serve(tiny_variant):
    """Starts a server with the given credentials and limits; returns (base_url, bot)."""
    import uvicorn
    from fastapi import FastAPI

    servers = []

    def start(credentials=None, limits=None):
        bot = Bot(tiny_variant)
        app = FastAPI()
        app.add_middleware(Guards, limits=limits or Limits())
        add_openai_routes(app, {"tiny": bot}, limits or Limits(), credentials)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}/v1", bot

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


QUESTION = [{"role": "user", "content": "How many days to return a grinder?"}]


def test_models_and_completions_streamed_and_not(serve):
    from openai import OpenAI

    url, bot = serve()
    client = OpenAI(base_url=url, api_key="unused", max_retries=0)
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]

    reply = bot.reply(QUESTION)
    expected = reply.text
    completion = client.chat.completions.create(model="tiny", messages=QUESTION)
    assert completion.choices[0].message.content == expected
    assert completion.choices[0].finish_reason == reply.finish_reason
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 10

    chunks = list(client.chat.completions.create(model="tiny", messages=QUESTION, stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) >= 2  # streamed, not one block
    assert "".join(pieces).strip() == expected
    assert chunks[-1].choices[0].finish_reason == reply.finish_reason


def test_sampling_parameters_are_honoured_or_refused_by_name(serve):
    import openai

    url, bot = serve()
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    short = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=3)
    assert short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length"
    capped = client.chat.completions.create(model="tiny", messages=QUESTION, max_completion_tokens=10_000)
    assert capped.usage.completion_tokens <= bot.variant.generation.max_new_tokens  # the variant's limit holds
    full = bot.reply(QUESTION).text
    stop = full[2:4]
    cut = client.chat.completions.create(model="tiny", messages=QUESTION, stop=[stop])
    assert cut.choices[0].message.content == full[: full.find(stop)].strip()
    assert cut.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model="tiny", messages=QUESTION, stream=True, max_tokens=2,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 2 and not chunks[-1].choices
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    for bad, name in (({"temperature": "hot"}, "temperature"), ({"n": 3}, "'n'"), ({"top_p": 0}, "top_p"),
                      ({"max_tokens": 0}, "max_tokens"), ({"stop": [1]}, "stop")):
        with pytest.raises(openai.BadRequestError, match=name):
            client.chat.completions.create(model="tiny", messages=QUESTION, extra_body=bad)


def test_errors_come_back_in_openai_shape(serve):
    import openai

    url, _ = serve(limits=Limits(max_message_chars=50, max_history_messages=3))
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="no model 'gpt-4'"):
        client.chat.completions.create(model="gpt-4", messages=QUESTION)
    with pytest.raises(openai.BadRequestError, match="limit is 50"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 51}])
    with pytest.raises(openai.BadRequestError, match="4 messages; the limit is 3"):
        client.chat.completions.create(model="tiny", messages=QUESTION * 4)
    with pytest.raises(openai.BadRequestError, match="must end with the user message"):
        client.chat.completions.create(model="tiny", messages=QUESTION + [{"role": "assistant", "content": "hi"}])


def test_credentials_are_required_when_set(serve):
    import openai

    url, _ = serve(credentials=("team", "s3cret"))
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
    assert openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0).models.list().data[0].id == "tiny"


def test_basic_auth_header_parsing():
    import base64

    good = "Basic " + base64.b64encode(b"team:s3cret").decode()
    assert check_basic_auth(None, None)
    assert check_basic_auth(good, ("team", "s3cret"))
    assert check_basic_auth("Bearer s3cret", ("team", "s3cret"))
    assert not check_basic_auth("Basic " + base64.b64encode(b"team:nope").decode(), ("team", "s3cret"))
    assert not check_basic_auth("Basic !!!", ("team", "s3cret"))
    assert not check_basic_auth(None, ("team", "s3cret"))


def test_login_protects_the_app_and_the_api_on_one_server(tiny_model_dir, tmp_path):
    import httpx
    import uvicorn
    import yaml

    from assistant.serve import server as serving

    variant = tmp_path / "tiny.yaml"
    variant.write_text(yaml.safe_dump({"name": "tiny", "model": {"base": str(tiny_model_dir), "quantization": "none",
                                                                 "device": "cpu"}}))
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"name": "other", "model": {"base": str(tiny_model_dir), "quantization": "none",
                                                                "device": "cpu"}, "prompt": {"template": "support.j2"},
                                     "generation": {"max_new_tokens": 3}}))
    args = serving.parse_args(["--variant", str(variant), "--data", str(tmp_path / "fb"), "--auth", "team:s3cret",
                           "--reports", str(tmp_path / "none"), "--api-variant", str(other)])
    assert args.host == "127.0.0.1"  # this machine only, unless asked
    server_app, _ = serving.build_server(args)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(server_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        assert httpx.get(f"{base}/v1/models").status_code == 401
        models = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["tiny", "other"]
        assert httpx.get(f"{base}/config").status_code == 401  # the Gradio app wants the login too
        with httpx.Client(base_url=base) as browser:
            assert browser.post("/login", data={"username": "team", "password": "wrong"}).status_code != 200
            assert browser.post("/login", data={"username": "team", "password": "s3cret"}).status_code == 200
            assert browser.get("/config").status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_an_8_mb_body_gets_a_413_the_client_reads(serve):
    """A client without Expect: 100-continue writes its whole body before it reads. The standard library's
    urllib also asks for 'Connection: close', so a server that answered before reading would close a
    connection with unread bytes in it, and the client would see a reset instead of the status."""
    import urllib.error
    import urllib.request

    import httpx

    url, _ = serve(limits=Limits(max_body_bytes=1 << 20))
    body = b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"x" * (8 << 20) + b'"}]}'
    request = urllib.request.Request(f"{url}/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413 and json.loads(refused.value.read())["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: the handler refuses it once past the limit, and drops the rest
        for start in range(0, len(body), 1 << 16):
            yield body[start:start + (1 << 16)]

    for content in (body, chunked()):
        response = httpx.post(f"{url}/chat/completions", content=content, timeout=60,
                              headers={"content-type": "application/json", "connection": "close"})
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_malformed_bodies_get_400_or_413_in_openai_shape(serve):
    import httpx

    url, _ = serve(limits=Limits(max_body_bytes=4096))

    def post(content: bytes, **headers):
        response = httpx.post(f"{url}/chat/completions", content=content,
                              headers={"content-type": "application/json", **headers}, timeout=30)
        body = response.json()
        assert set(body) == {"error"} and body["error"]["message"] and body["error"]["type"], body
        return response.status_code, body["error"]["message"]

    ok = b'{"model": "tiny", "messages": [{"role": "user", "content": "%s"}]}'
    assert post(b"x" * 5000)[0] == 413  # refused from its length, never kept

    def chunks():
        yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    response = httpx.post(f"{url}/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413  # no length given: cut off where the limit is
    assert post(b"[" * 2000 + b"]" * 2000) == (400, "the body's JSON is nested too deeply")
    assert post(ok % b"a\\u0000b")[1] == "message 1 (user) contains a NUL character"
    assert "lone surrogate" in post(ok % b"\\ud800 hi")[1]
    assert "not valid UTF-8" in post(ok % b"caf\xe9")[1]
    assert post(b"not json")[0] == 400
    assert post(b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "foo": 1}') == (
        400, "Unrecognized request argument supplied: foo")
    assert "'tools' is not supported" in post(b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], '
                                              b'"tools": [{"type": "function"}]}')[1]
    assert post(b'{"model": 7, "messages": []}')[0] == 400
    assert post(b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}')[0] == 400
    assert httpx.post(f"{url}/chat/completions", content=ok % b"hi", headers={"content-type": "application/json"},
                      timeout=60).status_code == 200  # and the server still answers


def test_repeated_failed_logins_are_slowed_down(serve, monkeypatch):
    import httpx

    url, _ = serve(credentials=("team", "s3cret"))
    wrong = {"Authorization": "Bearer nope"}
    codes = [httpx.get(f"{url}/models", headers=wrong).status_code for _ in range(7)]
    assert codes[:5] == [401] * 5 and 429 in codes[5:]
    blocked = httpx.get(f"{url}/models", headers={"Authorization": "Bearer s3cret"})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1  # even the right password waits

    clock = [1000.0]
    monkeypatch.setattr("assistant.serve.api.time.monotonic", lambda: clock[0])
    throttle = LoginThrottle(free=2, longest=8)
    for _ in range(2):
        throttle.failed("a")
    assert throttle.wait("a") == 0.0  # the free attempts
    waits = []
    for _ in range(5):
        throttle.failed("a")
        waits.append(throttle.wait("a"))
    assert waits == [2.0, 4.0, 8.0, 8.0, 8.0]  # doubling, capped
    assert throttle.wait("b") == 0.0  # per client
    clock[0] += 8
    assert throttle.wait("a") == 0.0
    throttle.succeeded("a")
    throttle.failed("a")
    assert throttle.wait("a") == 0.0


def test_serving_beyond_loopback_without_a_login_warns(tiny_model_dir, tmp_path, capsys):
    import yaml

    from assistant.serve import server as serving

    variant = tmp_path / "tiny.yaml"
    variant.write_text(yaml.safe_dump({"name": "tiny", "model": {"base": str(tiny_model_dir), "quantization": "none",
                                                                 "device": "cpu"}}))
    common = ["--variant", str(variant), "--data", str(tmp_path / "fb"), "--reports", str(tmp_path / "none")]
    serving.build_server(serving.parse_args(common))
    assert "warning" not in capsys.readouterr().err  # loopback: no warning
    serving.build_server(serving.parse_args(common + ["--host", "0.0.0.0"]))
    assert "without --auth" in capsys.readouterr().err
    serving.build_server(serving.parse_args(common + ["--host", "0.0.0.0", "--auth", "team:s3cret"]))
    assert "warning" not in capsys.readouterr().err
