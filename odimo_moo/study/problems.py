"""How study validation records problems and reads typed values: one line per problem, with its
key path; numbers given as strings (YAML 1.1 reads ``1e-4`` as one) and booleans spelled ``true`` or
``false`` are accepted."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence


class Problems:
    """Collects one line per problem, prefixed by its key path."""

    def __init__(self, lines: Sequence[str] = ()) -> None:
        self.lines = list(lines)

    def add(self, path: str, message: str) -> None:
        """Record ``message`` about the value at ``path``."""
        self.lines.append(f"{path}: {message}")


def kind_name(kind: type) -> str:
    """``kind`` as an error message names it (``int`` -> "an integer")."""
    return {float: "a number", int: "an integer", bool: "true or false", str: "a string"}[kind]


def coerce(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` or raise ValueError: the one rule set of study keys, setup options and
    training parameters. Numbers given as strings are accepted, and booleans as the strings ``true``
    and ``false`` (any case); booleans are never numbers, nor ``yes``, ``no``, 0 or 1 booleans."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError
    if isinstance(value, bool) or value is None:
        raise ValueError
    if kind is str:
        if isinstance(value, str):
            return value
        raise ValueError
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError
    number = float(value)
    if not math.isfinite(number):
        raise ValueError
    return number


def typed(raw: Any, path: str, kind: type, problems: Problems) -> Any:
    """``raw`` as ``kind``, or None with the problem recorded."""
    try:
        return coerce(raw, kind)
    except (TypeError, ValueError):
        problems.add(path, f"must be {kind_name(kind)}, got {raw!r}")
        return None


def optional(raw: Mapping[str, Any], key: str, kind: type, default: Any, problems: Problems,
             path: str | None = None) -> Any:
    """``raw[key]`` as ``kind``; ``default`` when it is absent, null or of the wrong type (the problem
    recorded at ``path``, default ``key``)."""
    if raw.get(key) is None:
        return default
    value = typed(raw[key], path or key, kind, problems)
    return default if value is None else value


def string_list(raw: Any, path: str, problems: Problems) -> tuple[str, ...]:
    """A list of strings (one string counts as a list of one)."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        problems.add(path, f"must be a list of strings, got {raw!r}")
        return ()
    items = []
    for i, item in enumerate(raw):
        value = typed(item, f"{path}[{i}]", str, problems)
        if value is not None:
            items.append(value)
    return tuple(items)


def unknown_keys(raw: Mapping[str, Any], known: Sequence[str], path: str, problems: Problems) -> None:
    """Record every key of ``raw`` that is not in ``known``."""
    for key in raw:
        if key not in known:
            where = f"{path}.{key}" if path else str(key)
            problems.add(where, f"unknown key; known keys: {', '.join(known)}")


def mapping(raw: Any, path: str, problems: Problems) -> dict[str, Any]:
    """``raw`` if it is a mapping, else ``{}`` (a problem unless it is null)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(path, f"must be a mapping, got {raw!r}")
        return {}
    return raw
