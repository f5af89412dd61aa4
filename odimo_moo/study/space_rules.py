"""Validation of what a study trains and searches: fixed ``training`` parameters, the
``search_space`` (ranges and choices) and the ``enqueue``d points, each checked against the
strategy's parameters and :class:`~odimo_moo.recipe.Recipe`'s rules."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .problems import Problems, kind_name, mapping, typed, unknown_keys
from .registry_names import Names
from .schema import Choice, Param, Range


def parse_training(raw: Any, names: Names | None, problems: Problems) -> dict[str, Any]:
    """The ``training`` mapping, each parameter typed and checked (unchecked if names are unknown)."""
    training = {}
    for key, value in mapping(raw, "training", problems).items():
        path = f"training.{key}"
        if names is None:
            training[key] = value
            continue
        if key not in names.parameter_kinds:
            problems.add(path, f"unknown training parameter; known: {', '.join(sorted(names.parameter_kinds))}")
            continue
        value = typed(value, path, names.parameter_kinds[key], problems)
        if value is None:
            continue
        message = names.check_value(key, value)
        if message:
            problems.add(path, message)
            continue
        training[key] = value
    return training


def _range_ends(spec: Any, path: str, problems: Problems) -> dict[str, Any] | None:
    """A range spec as a mapping with ``low`` and ``high``, or None (problem recorded)."""
    if isinstance(spec, list):
        if len(spec) != 2:
            problems.add(path, f"a range is [low, high], got {spec!r}")
            return None
        spec = {"low": spec[0], "high": spec[1]}
    unknown_keys(spec, ("low", "high", "log"), path, problems)
    if "low" not in spec or "high" not in spec:
        problems.add(path, "a range needs both low and high")
        return None
    return spec


def _range(name: str, spec: Any, kind: type, path: str, names: Names, problems: Problems) -> Param | None:
    spec = _range_ends(spec, path, problems)
    if spec is None:
        return None
    before = len(problems.lines)
    low = typed(spec["low"], f"{path}.low", kind, problems)
    high = typed(spec["high"], f"{path}.high", kind, problems)
    log = kind is float if spec.get("log") is None else typed(spec["log"], f"{path}.log", bool, problems)
    if len(problems.lines) > before:
        return None
    if log and low <= 0:
        problems.add(f"{path}.low", "must be > 0 for a log range (set log: false for a linear range; "
                                    "enqueue a point to try 0)")
    if log and high <= 0:
        problems.add(f"{path}.high", "must be > 0 for a log range")
    if low >= high:
        problems.add(path, f"low ({low:g}) must be < high ({high:g})")
    for end, value in (("low", low), ("high", high)):
        message = names.check_value(name, value)
        if message:
            problems.add(f"{path}.{end}", message)
    if len(problems.lines) > before:
        return None
    return Range(name, low, high, bool(log), kind is int)


def _choice(name: str, spec: Mapping[str, Any], kind: type, path: str, names: Names,
            problems: Problems) -> Param | None:
    unknown_keys(spec, ("choices",), path, problems)
    raw = spec["choices"]
    if not isinstance(raw, list) or not raw:
        problems.add(f"{path}.choices", f"must be a non-empty list, got {raw!r}")
        return None
    before = len(problems.lines)
    choices = []
    for i, item in enumerate(raw):
        value = typed(item, f"{path}.choices[{i}]", kind, problems)
        if value is None:
            continue
        message = names.check_value(name, value)
        if message:
            problems.add(f"{path}.choices[{i}]", message)
        elif value in choices:
            problems.add(f"{path}.choices[{i}]", f"{value!r} is listed twice")
        else:
            choices.append(value)
    if len(problems.lines) > before:
        return None
    return Choice(name, tuple(choices))


def _dimension(name: str, spec: Any, training: Mapping[str, Any], names: Names, problems: Problems) -> Param | None:
    """One dimension of the search space, or None (problem recorded)."""
    path = f"search_space.{name}"
    if name not in names.parameter_kinds:
        problems.add(path, f"unknown parameter; known: {', '.join(sorted(names.parameter_kinds))}")
        return None
    if name in training:
        problems.add(path, "is also fixed under training; keep it in one place")
        return None
    kind = names.parameter_kinds[name]
    if isinstance(spec, dict) and "choices" in spec:
        return _choice(name, spec, kind, path, names, problems)
    if isinstance(spec, (dict, list)) and kind in (int, float):
        return _range(name, spec, kind, path, names, problems)
    if kind in (int, float):
        problems.add(path, f"must be a range [low, high], {{low, high, log}} or {{choices: [...]}}, got {spec!r}")
    else:
        problems.add(path, f"{name} takes {kind_name(kind)}: give {{choices: [...]}}, got {spec!r}")
    return None


def parse_search_space(raw: Any, training: Mapping[str, Any], names: Names | None,
                       problems: Problems) -> tuple[Param, ...]:
    """The ``search_space`` mapping as ranges and choices (empty if names are unknown)."""
    if raw is None:
        return ()
    space = mapping(raw, "search_space", problems)
    if isinstance(raw, dict) and not space:
        problems.add("search_space", "must name at least one parameter, e.g. lambda: [1.0e-6, 1.0e-3]")
    if names is None:
        return ()
    params = [_dimension(name, spec, training, names, problems) for name, spec in space.items()]
    return tuple(param for param in params if param is not None)


def _point_value(param: Param, value: Any, path: str, names: Names | None, problems: Problems) -> Any:
    """One value of an enqueued point, or None (problem recorded)."""
    kind = names.parameter_kinds[param.name] if names else float
    value = typed(value, path, kind, problems)
    if value is None:
        return None
    zero_on_log = isinstance(param, Range) and param.log and value == 0
    if not (param.contains(value) or zero_on_log):
        allowed = (f"in [{param.low:g}, {param.high:g}]" + (" or exactly 0" if param.log else "")
                   if isinstance(param, Range) else f"one of {list(param.choices)}")
        problems.add(path, f"{value!r} is outside the search space: must be {allowed}")
        return None
    message = names.check_value(param.name, value) if names else None
    if message:
        problems.add(path, message)
        return None
    return value


def parse_enqueue(raw: Any, space: tuple[Param, ...], declared: Sequence[str], names: Names | None,
                  problems: Problems) -> tuple[dict[str, Any], ...]:
    """Enqueued points; values of declared but invalid dimensions are skipped (already reported)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.add("enqueue", f"must be a list of points such as {{lambda: 0}}, got {raw!r}")
        return ()
    by_name = {p.name: p for p in space}
    points = []
    for i, point in enumerate(raw):
        path = f"enqueue[{i}]"
        if not isinstance(point, dict) or not point:
            problems.add(path, f"must be a non-empty mapping of search-space parameters, got {point!r}")
            continue
        values = {}
        for name, value in point.items():
            if name not in by_name:
                if names is not None and name not in declared:
                    problems.add(f"{path}.{name}", f"not in the search space ({', '.join(by_name) or 'empty'})")
                continue
            value = _point_value(by_name[name], value, f"{path}.{name}", names, problems)
            if value is not None:
                values[name] = value
        points.append(values)
    return tuple(points)
