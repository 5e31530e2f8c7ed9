"""An OpenAI-compatible endpoint: ``GET /v1/models`` and ``POST /v1/chat/completions`` (streamed or not).

Any served variant answers by name through the same ``Bot`` path the app uses, so a client written for
OpenAI's API (the official ``openai`` package included) talks to a domain bot by changing its base URL.
Mounted beside the Gradio app on the same server (see server.py). Errors use OpenAI's error shape.

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:7860/v1", api_key="...")
    client.chat.completions.create(model="tidewater-rag", messages=[{"role": "user", "content": "Hi"}])
"""


import base64
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

from assistant.messages import message_problems


@dataclass
class Limits:
    """What one request may ask for; beyond it the request is refused with a message that says why."""

    max_message_chars: int = 4000
    """Longest single message, in characters."""
    max_history_messages: int = 40
    """Most messages in one conversation."""
    concurrency: int = 16
    """Requests handled at once; the rest wait in line."""
    max_body_bytes: int = 1 << 20
    """Largest request body; a bigger one is refused (413) without being kept."""


class RequestError(ValueError):
    """A request the server refuses: the message is shown to the user or returned as an API error."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.code = code


def check_conversation(messages: Any, limits: Limits) -> list[dict[str, str]]:
    """Validates a conversation against the limits; returns it as plain role/content messages."""
    if isinstance(messages, list) and len(messages) > limits.max_history_messages:
        raise RequestError(f"the conversation has {len(messages)} messages; the limit is "
                           f"{limits.max_history_messages}. Start a new conversation.")
    out = []
    for i, m in enumerate(messages if isinstance(messages, list) else [], 1):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
            if not all(isinstance(t, str) for t in texts):
                raise RequestError(f"message {i}: a text part's 'text' must be a string")
            content = "".join(texts)
        out.append({"role": m.get("role"), "content": content} if isinstance(m, dict) else m)
    problems = message_problems(out if isinstance(messages, list) else messages, last="user", strict_order=False)
    if problems:
        raise RequestError("; ".join(problems))
    for i, m in enumerate(out, 1):
        if len(m["content"]) > limits.max_message_chars:
            raise RequestError(f"message {i} is {len(m['content'])} characters long; the limit is "
                               f"{limits.max_message_chars}. Shorten it.")
    return [m for m in out if m["role"] != "system"]  # the variant's template writes the system message


# OpenAI's chat parameters: the ones honoured, the ones accepted and ignored because they change nothing
# here, and the ones refused unless left at their default. Any other name is refused as OpenAI refuses it.
HONOURED = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
            "top_p", "seed", "stop", "n"}
IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "modalities", "reasoning_effort"}
UNSUPPORTED = {"tools": None, "tool_choice": None, "functions": None, "function_call": None, "logprobs": False,
               "top_logprobs": None, "logit_bias": None, "frequency_penalty": 0, "presence_penalty": 0,
               "response_format": None, "prediction": None, "audio": None, "web_search_options": None}


def check_parameters(body: Any) -> None:
    """Refuses a body that is not an object, names it when a parameter is unknown, of the wrong type, or
    one this server cannot honour (tools, logprobs, penalties, response formats...)."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    for name, value in body.items():
        if name in UNSUPPORTED:
            default = UNSUPPORTED[name]
            if value is not None and value != default and not (name == "response_format" and value == {"type": "text"}):
                raise RequestError(f"'{name}' is not supported by this server", code="unsupported_parameter")
        elif name not in HONOURED and name not in IGNORED:
            raise RequestError(f"Unrecognized request argument supplied: {name}")
    if not isinstance(body.get("model"), str):
        raise RequestError("'model' must be the name of a served model (GET /v1/models lists them)")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise RequestError("'stream' must be true or false")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool)):
        raise RequestError("'stream_options' must be an object like {\"include_usage\": true}")


class LoginThrottle:
    """Slows down guessing: after ``free`` failed logins from one client, each further failure makes the
    next attempt wait twice as long as the one before (2 s, 4 s, 8 s, ... up to ``longest``); attempts made
    meanwhile are refused unread. A successful login clears the count."""

    def __init__(self, free: int = 5, longest: float = 60.0):
        self.free = free
        self.longest = longest
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Seconds this client must still wait before its next attempt is even looked at."""
        with self._lock:
            count, last = self._failures.get(client, (0, 0.0))
        if count <= self.free:
            return 0.0
        return max(0.0, last + min(self.longest, 2.0 ** (count - self.free)) - time.monotonic())

    def failed(self, client: str) -> None:
        with self._lock:
            count, _ = self._failures.get(client, (0, 0.0))
            self._failures[client] = (count + 1, time.monotonic())
            if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
                self._failures.pop(next(iter(self._failures)))

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


DRAIN_BYTES = 64 << 20
"""How much of an oversized body is read and dropped before the 413, so that the client sees it."""


async def discard_body(receive, bound: int) -> None:
    """Reads the rest of a request body without keeping it, ``bound`` bytes at most."""
    seen = 0
    while seen <= bound:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client left
        seen += len(message.get("body", b""))
        if not message.get("more_body"):
            return


class Guards:
    """ASGI middleware on the whole server (app and API): a body over ``limits.max_body_bytes`` is refused
    with 413 from its Content-Length before the app sees it (the body is read and dropped, then the connection
    closed), and a client that keeps failing to log in
    (the app's /login, or the API's credentials) gets 429 with Retry-After until its wait is over.
    Plain ASGI rather than Starlette's BaseHTTPMiddleware, so streamed answers and client disconnects pass
    through untouched."""

    def __init__(self, app, limits: Limits, throttle: LoginThrottle | None = None):
        self.app = app
        self.limits = limits
        self.throttle = throttle or LoginThrottle()

    async def __call__(self, scope, receive, send):
        from starlette.responses import JSONResponse

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        client = (scope.get("client") or ("unknown", 0))[0]
        guarded = path == "/login" or path.startswith("/v1/")
        wait = self.throttle.wait(client) if guarded else 0.0
        if wait > 0:
            response = JSONResponse({"error": {"message": f"too many failed logins; retry in {wait:.0f} s",
                                               "type": "rate_limit_error", "code": "rate_limit_exceeded"}},
                                    status_code=429, headers={"Retry-After": str(max(1, round(wait)))})
            return await response(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limits.max_body_bytes):
            # Closing on a client that is still writing resets the connection before it reads the status, so
            # the body is read and dropped first (up to a bound; past it the connection is closed anyway).
            await discard_body(receive, DRAIN_BYTES)
            response = JSONResponse({"error": {"message": f"the body is over the limit of "
                                               f"{self.limits.max_body_bytes} bytes", "type": "invalid_request_error",
                                               "code": "request_too_large"}}, status_code=413,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)
        status: list[int] = []

        async def watch(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive, watch)
        if guarded and status:
            if status[0] == 401 or (path == "/login" and status[0] >= 400):
                self.throttle.failed(client)
            elif path == "/login":
                self.throttle.succeeded(client)


async def read_body(request, limit: int) -> Any:
    """The request's JSON body, read at most ``limit`` bytes far (a body sent without a length is kept only
    that far, the rest read and dropped so that the client sees the 413), parsed with every way it can be
    malformed turned into a RequestError."""
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + DRAIN_BYTES:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise RequestError(f"the body is over the limit of {limit} bytes", 413, "request_too_large")
    raw = b"".join(chunks)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"the body must be JSON ({exc.msg} at character {exc.pos})") from None
    except RecursionError:
        raise RequestError("the body's JSON is nested too deeply") from None


def check_basic_auth(header: str | None, credentials: tuple[str, str] | None) -> bool:
    """True when no credentials are required, or the Authorization header carries them (HTTP Basic with
    user and password, or a Bearer token equal to the password, which is what OpenAI clients send)."""
    if credentials is None:
        return True
    if not header:
        return False
    user, password = credentials
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.strip(), password)
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip()).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(given, f"{user}:{password}")
    return False


def _chunk(request_id: str, model: str, created: int, delta: dict, finish: str | None = None) -> str:
    body = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def add_openai_routes(app, bots: dict[str, Any], limits: Limits, credentials: tuple[str, str] | None = None) -> None:
    """Adds /v1/models and /v1/chat/completions to a FastAPI app, serving ``bots`` by variant name."""
    from fastapi import Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    gate = threading.BoundedSemaphore(limits.concurrency)

    def error(status: int, message: str, code: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": code, "code": code}}, status_code=status,
                            headers={"WWW-Authenticate": "Basic"} if status == 401 else None)

    def authorised(request: Request) -> bool:
        return check_basic_auth(request.headers.get("authorization"), credentials)

    @app.get("/v1/models")
    async def models(request: Request):
        if not authorised(request):
            return error(401, "missing or wrong credentials", "authentication_error")
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "assistant",
             "variant_hash": bot.variant.variant_hash()} for name, bot in bots.items()]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        if not authorised(request):
            return error(401, "missing or wrong credentials", "authentication_error")
        try:
            body = await read_body(request, limits.max_body_bytes)
            check_parameters(body)
            model = body["model"]
            if model not in bots:
                raise RequestError(f"no model {model!r}; available: {', '.join(bots)}", 404, "model_not_found")
            history = check_conversation(body.get("messages"), limits)
            bot = bots[model]
            sampling = request_sampling(bot, body)
        except RequestError as exc:
            return error(exc.status, str(exc), exc.code)
        request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        if not body.get("stream"):
            def answer() -> Any:
                with gate:
                    return bot.reply(history, sampling)

            reply = await run_in_threadpool(answer)
            return {"id": request_id, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                                 "finish_reason": reply.finish_reason}],
                    "usage": _usage(reply.prompt_tokens, reply.new_tokens)}

        include_usage = isinstance(body.get("stream_options"), dict) and body["stream_options"].get("include_usage")

        def pieces() -> Iterator[str]:
            with gate:
                yield _chunk(request_id, model, created, {"role": "assistant", "content": ""})
                stats: dict[str, Any] = {}
                prepared, stream = bot.start(history, sampling, stats)
                try:
                    for piece in stream:
                        yield _chunk(request_id, model, created, {"content": piece})
                finally:
                    stream.close()  # the client went away: stop generating
                yield _chunk(request_id, model, created, {}, stats.get("finish_reason", "stop"))
                if include_usage:
                    usage = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
                             "choices": [], "usage": _usage(len(prepared.input_ids), stats.get("new_tokens", 0))}
                    yield f"data: {json.dumps(usage)}\n\n"
                yield "data: [DONE]\n\n"

        return StreamingResponse(pieces(), media_type="text/event-stream")


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def request_sampling(bot: Any, body: dict) -> Any:
    """The request's sampling parameters over the variant's: ``max_tokens`` / ``max_completion_tokens``
    (capped by the variant's own limit), ``temperature``, ``top_p``, ``seed`` and ``stop``. A parameter of
    the wrong type or out of range is refused, naming it; ``n`` above 1 is refused (one answer per request)."""
    def number(name: str, low: float, high: float, integer: bool = False) -> Any:
        value = body.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or not low <= value <= high:
            kind = "an integer" if integer else "a number"
            raise RequestError(f"'{name}' must be {kind} from {low} to {high}, got {value!r}")
        return value

    limit = bot.variant.generation.max_new_tokens
    max_tokens = number("max_completion_tokens", 1, 2**31, True) or number("max_tokens", 1, 2**31, True)
    n = number("n", 1, 128, True)
    if n is not None and n > 1:
        raise RequestError("'n' above 1 is not supported: send one request per answer")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > 4
                             or not all(isinstance(x, str) and x for x in stop)):
        raise RequestError("'stop' must be a string or a list of up to 4 non-empty strings")
    top_p = number("top_p", 0, 1)
    if top_p == 0:
        raise RequestError("'top_p' must be above 0")
    return bot.sampling(max_new_tokens=min(max_tokens, limit) if max_tokens else None,
                        temperature=number("temperature", 0, 2), top_p=top_p,
                        seed=number("seed", -2**63, 2**63 - 1, True), stop=stop)
