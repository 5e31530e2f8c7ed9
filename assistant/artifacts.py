"""Files on disk: where the cache lives, writes that are never seen half-done, and content fingerprints.

Every module that writes a file others read, or names cached work by what it was made from, comes here:

- ``cache_dir()``: $ASSISTANT_CACHE, else ~/.cache/assistant (converted models, GGUF files, evaluation
  answers, embeddings, the fingerprint memo).
- ``write_atomically(path, fill)`` and ``write_json``: a file is written beside its destination and renamed
  into place, so a reader (or a process killed mid-write) never leaves or sees half a file.
- ``publish_atomically(folder, build)``: the same for folders (adapters, reports, converted models).
- ``file_sha256(path)``: the sha256 of one file, memoised on disk by path, size and modification time, so a
  model's weights are read once per machine, not once per command.
- ``fingerprint(path, suffixes)``: one content fingerprint for a file or a folder (relative names and bytes;
  hidden files skipped; only the given suffixes when set). Variant hashes, GGUF cache names, cached answers
  and model cards all use it, so two of them naming the same weights carry the same value.

How cache keys migrate: a fingerprint names content, never a path, so moving a checkout keeps every key. The
evaluation answer cache was keyed by another weights hash before this module existed; its lookups fall back
to that legacy key once and move the entries over (see ``assistant.evaluation.answers``). Everything else in
the cache (converted models, GGUF files, embeddings) kept its names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def cache_dir() -> Path:
    """$ASSISTANT_CACHE, else ~/.cache/assistant."""
    return Path(os.environ.get("ASSISTANT_CACHE") or Path.home() / ".cache" / "assistant")


def write_atomically(path: Path, fill: Callable[[Path], None]) -> Path:
    """Calls ``fill`` with a temporary sibling of ``path``, then renames it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fill(staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def write_json(path: Path, data: Any) -> Path:
    return write_atomically(
        path, lambda tmp: tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    def fill(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    return write_atomically(path, fill)


def publish_atomically(destination: Path, build: Callable[[Path], None], replace: bool = False) -> Path:
    """Builds a folder in a temporary sibling and renames it into place.

    Two processes doing this at once both build, one rename wins, the other's copy is discarded: readers
    never see a half-written folder. A crash or an exception in ``build`` leaves neither a temporary
    folder nor a changed ``destination``.

    Args:
        destination: final folder; returned as is when it already exists, unless ``replace``.
        build: fills the empty folder it is given.
        replace: swap an existing ``destination`` for the new folder (the old one is renamed aside first
            and deleted after, so the name always points at a complete folder).
    """
    if destination.is_dir() and not replace:
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        build(staging)
        if replace and destination.exists():
            old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
            os.rename(destination, old)
            os.rename(staging, destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(staging, destination)
            except OSError:
                if not destination.is_dir():  # a real failure, not a lost race
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


# -- fingerprints ----------------------------------------------------------------------------------------

_MEMO_LOCK = threading.Lock()
_MEMO: dict[str, str] = {}  # "resolved path|size|mtime_ns" -> sha256, this process's view of the disk memo
_MEMO_LOADED: list[Path] = []  # the memo file the dict was read from (tests switch caches)


def _memo_path() -> Path:
    return cache_dir() / "fingerprints.json"


def file_sha256(path: Path) -> str:
    """sha256 of one file, memoised by resolved path, size and modification time (in process and on disk)."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    with _MEMO_LOCK:
        memo_path = _memo_path()
        if _MEMO_LOADED != [memo_path]:
            _MEMO.clear()
            try:
                _MEMO.update(json.loads(memo_path.read_text()))
            except (OSError, ValueError):
                pass  # no memo yet, or a damaged one: start afresh
            _MEMO_LOADED[:] = [memo_path]
        if key in _MEMO:
            return _MEMO[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    with _MEMO_LOCK:
        _MEMO[key] = digest.hexdigest()
        if stat.st_size >= 1 << 20:  # small files are cheaper to hash again than to remember
            write_json(memo_path, _MEMO)
    return _MEMO[key]


def fingerprint(path: Path, suffixes: tuple[str, ...] | None = None) -> str:
    """16 hex digits naming a file's or a folder's content: relative names and bytes, hidden files skipped,
    only the given suffixes when set. A missing path gives 'missing:<name>', so a hash can still be computed
    (and the caller's own check reports the path)."""
    path = Path(path)
    if not path.exists():
        return f"missing:{path.name}"
    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*")
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)
        and (suffixes is None or f.suffix in suffixes))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relative_to(path) if f != path else ''}:{file_sha256(f)}\n".encode())
    return digest.hexdigest()[:16]


def weights_fingerprint(location: str | Path) -> str:
    """The fingerprint of a model folder's weight files, or 'hub:<id>' for a model not on this disk."""
    folder = Path(location)
    return fingerprint(folder, WEIGHT_SUFFIXES) if folder.is_dir() else f"hub:{location}"
