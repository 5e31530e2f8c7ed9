"""Chat messages: the roles there are, and the one check of a list of ``{role, content}`` messages.

Training data, evaluation cases, preference pairs and API requests are all conversations; each reader
calls ``message_problems`` and reports what it returns with its own file and line (or HTTP status).
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant")


def message_problems(messages: Any, *, last: str | None = None, strict_order: bool = True) -> list[str]:
    """Every problem of a conversation, each naming the message (1-based); empty when it is sound.

    Args:
        messages: the list to check, as parsed from JSON.
        last: the role the conversation must end with ('user': a turn to answer; 'assistant': an answer
            to learn from), or None.
        strict_order: also require one optional leading system message, then user and assistant
            alternating from a user message (training data); False checks roles and content only.
    """
    if not isinstance(messages, list) or not messages:
        return ["'messages' must be a non-empty list of {role, content} objects"]
    problems = []
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict):
            problems.append(f"message {i} is not a {{role, content}} object")
            continue
        role, content = m.get("role"), m.get("content")
        if role is None:
            problems.append(f"message {i} has no role")
        elif role not in ROLES:
            problems.append(f"message {i} has unknown role {role!r} (use {', '.join(ROLES)})")
        if not isinstance(content, str):
            problems.append(f"message {i} ({role}) has no text content")
        elif not content.strip():
            problems.append(f"message {i} ({role}) is empty")
        elif "\x00" in content:
            problems.append(f"message {i} ({role}) contains a NUL character")
        elif any("\ud800" <= c <= "\udfff" for c in content):
            problems.append(f"message {i} ({role}) contains a lone surrogate (not valid Unicode text)")
    if problems:
        return problems
    roles = [m["role"] for m in messages]
    if strict_order:
        turns = roles[1:] if roles[0] == "system" else roles
        if "system" in turns:
            problems.append("a system message may only come first")
        elif turns and turns[0] != "user":
            problems.append("the conversation must start with a user message")
        elif any(a == b for a, b in zip(turns, turns[1:])):
            problems.append("user and assistant messages must alternate")
    if last == "assistant" and "assistant" not in roles:
        problems.append("no assistant message to learn from")
    elif last == "assistant" and roles[-1] != "assistant":
        problems.append("the conversation ends with a user message that is never answered")
    elif last == "user" and roles[-1] != "user":
        problems.append("the conversation must end with the user message to be answered")
    return problems
