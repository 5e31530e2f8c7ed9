"""Fuzzing the real server (app middleware + OpenAI-compatible API) on the tiny model with generated
requests: wrong types, huge, deep and Unicode-edge payloads, invalid bytes, odd headers, and clients that
leave mid-stream. Every answer must be 2xx, or 4xx in OpenAI's error shape; afterwards the server still
answers and its memory has stayed within a bound."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = 500
MEMORY_BOUND_MIB = 300  # growth of the server process's resident memory over the whole run
ODD = ["\x00", "\ud800", "\udfff", "\u202e", "\ufeff", "\uffff", "😀", "e\u0301", "\n\r\t", "{{ 7*7 }}", "<|im_end|>"]


def rss_mib() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024


@pytest.fixture(scope="module")
def server_url(tiny_model_dir, tmp_path_factory):
    import uvicorn
    from fastapi import FastAPI

    from assistant.generate import Bot
    from assistant.serve.api import Guards, Limits, add_openai_routes
    from assistant.variants import load_variant

    variant = load_variant(None, [f"model.base={tiny_model_dir}", "model.quantization=none", "model.device=cpu",
                                  "serving.engine=transformers", "generation.max_new_tokens=4"])
    limits = Limits(max_message_chars=2000, max_history_messages=8, max_body_bytes=64 * 1024)
    app = FastAPI()
    app.add_middleware(Guards, limits=limits)
    add_openai_routes(app, {"tiny": Bot(variant)}, limits)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=30)
    | st.sampled_from(ODD),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
texts = st.one_of(st.text(max_size=200), st.sampled_from(ODD), st.lists(st.sampled_from(ODD), max_size=6).map("".join),
                  st.integers(1000, 3000).map(lambda n: "long " * n))
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "bot", 5, None]),
                                           "content": st.one_of(texts, json_values)}), max_size=5)
params = st.dictionaries(
    st.sampled_from(["max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "n", "stream",
                     "stream_options", "tools", "logprobs", "user", "frequency_penalty", "foo", "response_format"]),
    st.one_of(json_values, st.integers(-5, 10), st.floats(-1, 3), st.booleans(), st.just({"include_usage": True})),
    max_size=4)
near_valid = st.builds(lambda model, msgs, extra: {"model": model, "messages": msgs, **extra},
                       st.sampled_from(["tiny", "tiny", "nope", 3, None]), messages, params)


valid = st.builds(
    lambda content, extra: {"model": "tiny", "messages": [{"role": "user", "content": content}], **extra},
    st.text(min_size=1, max_size=300).filter(lambda t: "\x00" not in t and not any("\ud800" <= c <= "\udfff" for c in t)),
    st.fixed_dictionaries({}, optional={"stream": st.booleans(), "max_tokens": st.integers(1, 8),
                                        "temperature": st.floats(0, 2), "top_p": st.floats(0.01, 1),
                                        "seed": st.integers(0, 2**31), "stop": st.lists(st.text(min_size=1, max_size=3), max_size=2),
                                        "stream_options": st.just({"include_usage": True}), "user": st.text(max_size=10)}))


@st.composite
def requests(draw):
    """(body bytes, headers, leave mid-stream)."""
    kind = draw(st.sampled_from(["valid", "valid", "valid", "near_valid", "near_valid", "json", "bytes", "deep", "huge"]))
    if kind == "valid":
        body = json.dumps(draw(valid)).encode()
    elif kind == "near_valid":
        body = json.dumps(draw(near_valid)).encode()
    elif kind == "json":
        body = json.dumps(draw(json_values)).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=2000))
    elif kind == "deep":
        depth = draw(st.integers(50, 100_000))
        body = b"[" * depth + b"]" * draw(st.sampled_from([depth, 0]))
    else:
        body = b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"z" * draw(
            st.integers(60_000, 200_000)) + b'"}]}'
    headers = {"content-type": draw(st.sampled_from(["application/json", "text/plain", "application/json; charset=latin-1",
                                                     "multipart/form-data", "application/json;;;", ""])),
               "x-odd": draw(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40))}
    if draw(st.booleans()):
        headers["accept-encoding"] = draw(st.sampled_from(["gzip", "br", "identity;q=0", "*"]))
    return body, headers, draw(st.booleans())


def test_generated_requests_get_2xx_or_4xx_in_openai_shape_and_the_server_survives(server_url):
    import httpx

    client = httpx.Client(timeout=60)
    seen = {"count": 0, "statuses": {}}
    before = rss_mib()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(requests())
    def one(request):
        body, headers, leave = request
        seen["count"] += 1
        with client.stream("POST", f"{server_url}/chat/completions", content=body, headers=headers) as response:
            status = response.status_code
            seen["statuses"][status] = seen["statuses"].get(status, 0) + 1
            assert 200 <= status < 300 or 400 <= status < 500, (status, body[:200])
            if status >= 400:
                error = json.loads(response.read())["error"]
                assert isinstance(error["message"], str) and error["message"] and error["type"]
            elif leave:
                next(response.iter_lines(), None)  # read one line, then hang up mid-stream
            else:
                response.read()

    one()
    assert seen["count"] >= EXAMPLES
    assert seen["statuses"].get(200, 0) > 50 and sum(n for s, n in seen["statuses"].items() if s >= 400) > 100
    answer = client.post(f"{server_url}/chat/completions",
                         json={"model": "tiny", "messages": [{"role": "user", "content": "still there?"}]})
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] is not None
    assert rss_mib() - before < MEMORY_BOUND_MIB, (before, rss_mib())
