"""The job spec's schema machinery: typed, strict readers of one mapping, with errors that name file and line.

A ``Document`` holds a spec's plain data and the line of each key path; a ``Section`` reads one mapping of
it, refusing unknown keys and naming the nearest valid one. Each workload's reader uses them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gpuprof.client.wire.errors import JobSpecError

from .protocol import MAX_ERROR_KEY_BYTES, MAX_ERROR_PROBLEM_BYTES, clip, excerpt

__all__ = [
    "REQUIRED",
    "Document",
    "JobSpecKeyError",
    "KeyPath",
    "Section",
    "base_dir",
    "did_you_mean",
    "excerpt",
    "file_path",
    "format_path",
    "kind_of",
    "parse_path",
]

KeyPath = tuple[str | int, ...]
REQUIRED: Any = object()  # default of a key that must be given


class JobSpecKeyError(JobSpecError):
    """A JobSpecError about one key: ``source``, ``line`` (None when unknown), ``key`` and ``problem``."""

    def __init__(self, source: str, line: int | None, key: str, problem: str) -> None:
        # Bounded like a daemon's error reply, and on one line: a spec's odd key or value is quoted, never
        # echoed whole, and a control character in it is escaped.
        key = clip(_printable(key), MAX_ERROR_KEY_BYTES)
        problem = clip(_printable(problem), MAX_ERROR_PROBLEM_BYTES)
        self.source = source
        self.line = line
        self.key = key
        self.problem = problem
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


def _printable(text: str) -> str:
    """``text``, escaped as a Python string literal's body when it holds a character that is not printable."""
    return text if text.isprintable() else text.encode("unicode_escape", "backslashreplace").decode()


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out


_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def parse_path(key: str) -> KeyPath:
    """The key path that format_path wrote as ``key`` (``dvfs.sm_clocks[2]``)."""
    return tuple(int(index) if index else name for index, name in _PATH_PART.findall(key))


class Document:
    """A spec's plain data and, when it came from YAML, the line of each key path."""

    def __init__(self, data: object, source: str, lines: dict[KeyPath, int] | None = None) -> None:
        self.data = data
        self.source = source
        self.lines = lines or {}

    def error(self, path: KeyPath, problem: str) -> JobSpecKeyError:
        """An error at ``path``, on its own line or else on the line of its nearest enclosing key."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return JobSpecKeyError(self.source, self.lines[path[:end]], format_path(path), problem)
        return JobSpecKeyError(self.source, None, format_path(path), problem)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _interval(low: float, high: float, low_open: bool) -> str:
    return f"{'(' if low_open else '['}{low:g}, {high:g}]"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    prefixed = [c for c in choices if len(word) >= 3 and c.startswith(word)]  # "duty" is "duty_cycle"
    close = prefixed or difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def kind_of(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    return "a list" if isinstance(value, list) else excerpt(value)


class Section:
    """One mapping of the spec: typed getters for its keys; unknown keys are refused on construction."""

    def __init__(self, doc: Document, path: KeyPath, data: object, keys: Iterable[str]) -> None:
        self.doc, self.path, self.keys = doc, path, tuple(keys)
        if not isinstance(data, dict):
            raise doc.error(path, f"must be a mapping of keys ({', '.join(self.keys)}), got {kind_of(data)}")
        self.data: dict[str, Any] = data
        for key in data:
            if not isinstance(key, str):
                raise doc.error(path, f"keys must be strings, got {excerpt(key)}")
            if key not in self.keys:
                hint = did_you_mean(key, self.keys)
                raise doc.error((*path, key), f"unknown key{hint}; valid keys: {', '.join(self.keys)}")

    def has(self, key: str) -> bool:
        return key in self.data

    def error(self, key: str, problem: str) -> JobSpecKeyError:
        return self.doc.error((*self.path, key), problem)

    def _get(self, key: str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is REQUIRED:
            raise self.error(key, "required key is missing")
        return default

    def number(self, key: str, default: Any, low: float, high: float, low_open: bool = False) -> float:
        value = self._get(key, default)
        ok = is_number(value) and (low < value if low_open else low <= value) and value <= high
        if not ok:  # NaN fails the comparisons
            raise self.error(
                key, f"must be a number in {_interval(low, high, low_open)}, got {excerpt(value)}"
            )
        return float(value)

    def integer(self, key: str, default: Any, low: int, high: int) -> int:
        value = self._get(key, default)
        if not (is_number(value) and isinstance(value, int) and low <= value <= high):
            raise self.error(key, f"must be an integer in [{low}, {high}], got {excerpt(value)}")
        return value

    def choice(self, key: str, default: Any, choices: tuple[str, ...]) -> str:
        value = self._get(key, default)
        if value not in choices or not isinstance(value, str):
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            options = ", ".join(repr(c) for c in choices)
            raise self.error(key, f"must be one of {options}, got {excerpt(value)}{hint}")
        return value

    def string(self, key: str, default: Any, max_chars: int) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            quote = "" if isinstance(value, (dict, list)) else " (quote it)"
            raise self.error(key, f"must be a string, got {kind_of(value)}{quote}")
        if not value or len(value) > max_chars or not value.isprintable():
            raise self.error(key, f"must be 1 to {max_chars} printable characters, got {excerpt(value)}")
        return value

    def boolean(self, key: str, default: Any) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {excerpt(value)}")
        return value

    def section(self, key: str, keys: Iterable[str]) -> Section:
        return Section(self.doc, (*self.path, key), self._get(key, REQUIRED), keys)

    def items(self, key: str, default: Any, max_items: int) -> list[tuple[KeyPath, Any]]:
        """The value of ``key`` as a list of (key path, item): one item, or each item of a list."""
        value = self._get(key, default)
        path = (*self.path, key)
        if not isinstance(value, list):
            return [(path, value)]
        if not 1 <= len(value) <= max_items:
            raise self.error(key, f"must list 1 to {max_items} items, got {len(value)}")
        return [((*path, index), item) for index, item in enumerate(value)]

    def integers(self, key: str, default: Any, low: int, high: int, max_items: int) -> tuple[int, ...]:
        """An integer or a list of distinct integers, each in [low, high]."""
        out: list[int] = []
        for path, item in self.items(key, default, max_items):
            if not (is_number(item) and isinstance(item, int) and low <= item <= high):
                raise self.doc.error(path, f"must be an integer in [{low}, {high}], got {excerpt(item)}")
            if item in out:
                raise self.doc.error(path, f"{item} is listed twice")
            out.append(item)
        return tuple(out)


def base_dir(doc: Document) -> Path | None:
    """The directory relative paths are resolved against: the spec file's, none for submitted data."""
    return None if doc.source.startswith("<") else Path(doc.source).resolve().parent


def file_path(doc: Document, path: KeyPath, value: object) -> str:
    """A file system path: ``~`` expanded, a relative one resolved against the spec file's directory (and
    refused in submitted data), normalised; whether it exists is for whoever opens it to say."""
    if not isinstance(value, str) or not value or "\0" in value or len(value) > 4096:
        raise doc.error(path, f"must be a file system path, got {kind_of(value)}")
    try:
        expanded = Path(value).expanduser()
    except RuntimeError:  # ~name of no account here
        raise doc.error(path, f"{excerpt(value)}: no such user's home directory") from None
    if not expanded.is_absolute():
        base = base_dir(doc)
        if base is None:
            raise doc.error(path, f"must be an absolute path in a submitted spec, got {excerpt(value)}")
        expanded = base / expanded
    return str(Path(*expanded.parts))  # normalised, "..'s" kept: the worker's open decides
