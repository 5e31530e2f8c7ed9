"""Prompt templates: sandboxed Jinja files that yield the list of chat messages.

A template sees plain data (``variables`` such as persona and tone, retrieved ``passages``, few-shot
``examples`` and the conversation ``history``) and calls ``emit(role, content)`` for each message it
wants the model to see. The tokenizer's own chat template then turns those messages into tokens, so
the same prompt file works for any chat model.

User and document text only ever arrive as values. Jinja never parses a value as template source, so a
user who types ``{{ 7*7 }}`` sends those nine characters to the model, not 49. The sandbox stops a
template from reaching Python internals, and ``StrictUndefined`` turns a missing variable into an error
that names the template and the variable instead of silently rendering nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.messages import ROLES

# The project's prompts/, reached from inside the package (see assistant/bundled): the repository's own folder
# in a checkout or an editable install, the copy a wheel carries after `pip install .`.
PROMPTS_DIR = (Path(__file__).parent / "bundled" / "prompts").resolve()


class PromptError(ValueError):
    """A template could not be found or rendered; the message names the template."""


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    path: Path
    source: str

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:12]


def find_template(name: str, search: list[Path] | None = None) -> PromptTemplate:
    """Finds a template by path, or by file name in the search folders (default: the project's prompts/).

    Raises:
        PromptError: naming every folder that was searched.
    """
    folders = list(search or []) + [PROMPTS_DIR]
    candidates = [Path(name)] if Path(name).is_absolute() else [folder / name for folder in folders]
    for path in candidates:
        if path.is_file():
            return PromptTemplate(path.name, path.resolve(), path.read_text(encoding="utf-8"))
    tried = ", ".join(str(p) for p in candidates)
    raise PromptError(f"prompt template {name!r} not found (tried {tried})")


def _environment():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    # autoescape off: the output is chat text, not HTML. trim/lstrip make block tags vanish cleanly.
    return SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False
    )


def render_messages(
    template: PromptTemplate,
    history: list[dict[str, str]],
    *,
    variables: dict[str, str] | None = None,
    passages: list[Any] | None = None,
    examples: list[list[dict[str, str]]] | None = None,
) -> list[dict[str, str]]:
    """Renders a template into chat messages.

    Args:
        template: from ``find_template``.
        history: the conversation so far, ``{"role", "content"}`` items, ending with the user's message.
        variables: named values for the template (persona, tone, ...).
        passages: retrieved passages (objects with ``text``, ``source``, ``heading``).
        examples: few-shot conversations, each a list of user/assistant messages.

    Returns:
        The message list; each item's content is stripped of surrounding whitespace.

    Raises:
        PromptError: a missing variable, a syntax error, a forbidden operation or a bad role,
            naming the template.
    """
    from jinja2 import TemplateSyntaxError, UndefinedError
    from jinja2.exceptions import SecurityError

    messages: list[dict[str, str]] = []

    def emit(role: str, content: Any) -> str:
        if role not in ROLES:
            raise PromptError(f"{template.name}: emit() got role {role!r}; use one of {', '.join(ROLES)}")
        text = str(content).strip()
        if text:
            messages.append({"role": role, "content": text})
        return ""

    context = dict(variables or {})
    context.update(
        history=[{"role": m["role"], "content": m["content"]} for m in history],
        passages=list(passages or []),
        examples=list(examples or []),
        emit=emit,
    )
    try:
        _environment().from_string(template.source).render(context)
    except UndefinedError as exc:
        raise PromptError(f"{template.name}: missing variable: {exc.message}") from None
    except TemplateSyntaxError as exc:
        raise PromptError(f"{template.name}:{exc.lineno}: template syntax error: {exc.message}") from None
    except SecurityError as exc:
        raise PromptError(f"{template.name}: not allowed in a template: {exc}") from None
    if not messages:
        raise PromptError(f"{template.name}: rendered no messages (call emit(role, content))")
    return messages
