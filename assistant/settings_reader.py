"""Reading settings into typed dataclasses: YAML files, KEY=VALUE overrides, type checks that collect every
problem, and the attribute docstrings that document each setting (for ``--help`` and commented YAML).

Nothing here knows which settings exist: the dataclasses in ``config.py`` (a variant) and
``training/config.py`` (training and DPO runs) say that, and their loaders use these functions.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal


class ConfigError(ValueError):
    """A user error in a settings file or override: the message names every problem."""


# ---------------------------------------------------------------------------------------------------------
# Files and overrides


class FileSettings:
    """Settings read from a file (a variant, a training config): relative paths in them resolve against
    ``root``, the file's folder, which the loader sets and which is not itself a setting."""

    root: str

    def resolve(self, value: str) -> Path:
        """Turns a path written in the settings into a path on this machine."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else (Path(self.root) / path).resolve()

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data, without ``root``."""
        data = dataclasses.asdict(self)
        data.pop("root")
        return data


def read_settings_file(path: Path, what: str) -> dict[str, Any]:
    """Reads a YAML settings file; a syntax error names the file and line."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"{path}: no such {what}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parses 'generation.max_new_tokens=64' into (['generation', 'max_new_tokens'], 64) with YAML typing."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, for example generation.max_new_tokens=64")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Returns a copy of ``data`` with each KEY=VALUE override set (nested keys by dots)."""
    data = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a section")
        node[path[-1]] = value
    return data


# ---------------------------------------------------------------------------------------------------------
# Plain data -> dataclass, with type checks that collect every error


def check_value(value: Any, annotation: Any, where: str, errors: list[str]) -> Any:
    """``value`` checked against a field's annotation; problems are appended to ``errors`` (named by
    ``where``, the dotted setting). Returns the value, converted where YAML reads a number as text."""
    if annotation is Any:  # any YAML value (a search space's values to try)
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return check_value(value, inner[0], where, errors)
    if origin is Literal:
        if isinstance(value, bool) and ("on" if value else "off") in args:
            value = "on" if value else "off"  # YAML 1.1 reads a bare off (no, false) as false, on as true
        if value not in args:
            errors.append(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list, got {type(value).__name__}")
            return value
        return [check_value(item, args[0], f"{where}[{i}]", errors) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            errors.append(f"{where}: expected a mapping of names to values, got {type(value).__name__}")
            return value
        if args[1] is str:  # text settings (template variables, search ranges): numbers become text
            return {k: str(v) for k, v in value.items()}
        return {k: check_value(v, args[1], f"{where}.{k}", errors) for k, v in value.items()}
    if dataclasses.is_dataclass(annotation):
        return build_settings(annotation, value, where, errors)
    if annotation is bool:
        if not isinstance(value, bool):
            errors.append(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):
            # YAML 1.1 reads '1e-4' (no dot) as text; accept any number written that way.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{where}: expected a number, got {value!r}")
            return value
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            errors.append(f"{where}: expected text, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} at {where}")


def build_settings(cls: type, data: Any, where: str, errors: list[str]) -> Any:
    """An instance of the settings dataclass ``cls`` from a mapping: unknown keys and wrong types are
    appended to ``errors``; settings the mapping leaves out keep their defaults."""
    if not isinstance(data, dict):
        errors.append(f"{where or 'top level'}: expected a mapping, got {type(data).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            errors.append(f"{where + '.' if where else ''}{key}: unknown setting (known: {', '.join(names)})")
    values = {}
    for name in names:
        if name in data:
            values[name] = check_value(data[name], hints[name], f"{where + '.' if where else ''}{name}", errors)
    return cls(**values)


# ---------------------------------------------------------------------------------------------------------
# Documentation: attribute docstrings


def setting_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a settings dataclass (the string right under each field)."""
    import ast
    import inspect

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "[]"
    if isinstance(value, dict):
        return "{}" if not value else json.dumps(value)
    if value == "":
        return '""'
    return str(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def setting_lines(cls: type, prefix: str = "", skip: tuple[str, ...] = ("root",), width: int = 100) -> list[str]:
    """One entry per setting of ``cls`` (nested sections and lists of sections by dotted names, e.g.
    ``lora.r``, ``tasks[].weight``): name, choices, default, and the attribute docstring, wrapped to ``width``.
    Fields named in ``skip`` (set by loaders, not by files) are left out."""
    hints = typing.get_type_hints(cls)
    docs = setting_docs(cls)
    lines: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        name = f"{prefix}{f.name}"
        annotation = hints[f.name]
        item = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None
        if dataclasses.is_dataclass(annotation):
            lines += setting_lines(annotation, f"{name}.", skip, width)
            continue
        if item is not None and dataclasses.is_dataclass(item):
            lines += setting_lines(item, f"{name}[].", skip, width)
            continue
        # the choices of a Literal setting, also when it may be none (Literal[...] | None)
        literal = next((typing.get_args(a) for a in (annotation, *typing.get_args(annotation))
                        if typing.get_origin(a) is Literal), ())
        facts = (f"{' | '.join(map(str, literal))}; " if literal else "") + f"default {_shown(_default(f))}"
        lines.append(f"  {name}  ({facts})")
        doc = docs.get(f.name, "")
        if doc:
            lines += textwrap.wrap(doc, width=width, initial_indent="      ", subsequent_indent="      ",
                                   break_long_words=False, break_on_hyphens=False)
    return lines


def settings_help(title: str, cls: type, width: int = 100) -> str:
    """A ``--help`` epilog: ``title`` (wrapped), then every setting of ``cls`` with its docstring."""
    return "\n".join([*textwrap.wrap(title, width=width, break_on_hyphens=False), *setting_lines(cls, width=width)])
