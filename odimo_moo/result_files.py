"""Reading a result folder's JSON files back (``mapping.json``, ``export_check.json``) with their
shape checked: a damaged file is one error naming the file, found before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import RunFailure

REGENERATE = "re-run the search that wrote it (same command, same --out) or restore the file"


def _damaged(path: Path, problem: str) -> RunFailure:
    return RunFailure(f"{path} is damaged: {problem}; {REGENERATE}")


def read_json_file(path: Path) -> Any:
    """The JSON document in ``path``; an unreadable or non-JSON file is a :class:`RunFailure` naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
        raise _damaged(path, f"not readable JSON ({type(exc).__name__}: {reason})") from exc


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def channel_split_of(mapping: Any, path: Path) -> dict[str, dict[str, int]]:
    """Per layer, per unit: the channel count of a mapping document (see docs/EXPORT.md), after
    checking every field an export reads (``layers``, and ``units`` when present)."""
    if not isinstance(mapping, dict):
        raise _damaged(path, f"expected a JSON object, got {type(mapping).__name__}")
    layers = mapping.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise _damaged(path, "no 'layers' object with the searched layers")
    split: dict[str, dict[str, int]] = {}
    for layer, info in layers.items():
        units = info.get("units") if isinstance(info, dict) else None
        if not isinstance(units, dict) or not units or not all(
                isinstance(unit, dict) and _is_count(unit.get("count")) for unit in units.values()):
            raise _damaged(path, f"layer {layer!r} lacks per-unit channel counts ('units': {{UNIT: {{'count': N}}}})")
        split[layer] = {name: unit["count"] for name, unit in units.items()}
    listed = mapping.get("units", [])
    if not isinstance(listed, list) or not all(
            isinstance(unit, dict) and isinstance(unit.get("name"), str) and _is_count(unit.get("index"))
            for unit in listed):
        raise _damaged(path, "'units' is not a list of {'name', 'index'} objects")
    return split


def input_shape_of(check: Any, path: Path) -> list[int]:
    """The network's input shape (no batch) recorded in an ``export_check.json`` document."""
    if not isinstance(check, dict):
        raise _damaged(path, f"expected a JSON object, got {type(check).__name__}")
    shape = check.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(_is_count(size) and size > 0 for size in shape):
        raise _damaged(path, f"'input_shape' must be a list of positive sizes, got {shape!r}")
    return shape
