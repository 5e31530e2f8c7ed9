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

ROLES = ("system", "user", "assistant")


@dataclass
class Limits:
    """What one request may ask for; beyond it the request is refused with a message that says why."""

    max_message_chars: int = 4000
    """Longest single message, in characters."""
    max_history_messages: int = 40
    """Most messages in one conversation."""
    concurrency: int = 4
    """Requests generating at once; the rest wait in line (generation per model is one at a time anyway)."""


class RequestError(ValueError):
    """A request the server refuses: the message is shown to the user or returned as an API error."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.code = code


def check_conversation(messages: Any, limits: Limits) -> list[dict[str, str]]:
    """Validates a conversation against the limits; returns it as plain role/content messages."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects")
    if len(messages) > limits.max_history_messages:
        raise RequestError(f"the conversation has {len(messages)} messages; the limit is "
                           f"{limits.max_history_messages}. Start a new conversation.")
    out = []
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RequestError(f"message {i}: role must be one of {', '.join(ROLES)}")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise RequestError(f"message {i}: content must be text")
        if len(content) > limits.max_message_chars:
            raise RequestError(f"message {i} is {len(content)} characters long; the limit is "
                               f"{limits.max_message_chars}. Shorten it.")
        out.append({"role": m["role"], "content": content})
    if out[-1]["role"] != "user":
        raise RequestError("the last message must be the user's")
    return [m for m in out if m["role"] != "system"]  # the variant's template writes the system message


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
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, "the body must be JSON", "invalid_request_error")
        model = body.get("model") if isinstance(body, dict) else None
        if model not in bots:
            return error(404, f"no model {model!r}; available: {', '.join(bots)}", "model_not_found")
        try:
            history = check_conversation(body.get("messages"), limits)
        except RequestError as exc:
            return error(exc.status, str(exc), exc.code)
        bot = bots[model]
        try:
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
