"""How a setting is declared once: its type, bounds, choices, default and help live in the metadata
of its dataclass field (:func:`setting`), and the schema's keys, generic validation, the YAML form
(``to_dict``), the identity and the docs' settings table (:mod:`.settings_doc`) are read from there.

Dataclass field metadata rather than pydantic: the settings are plain frozen dataclasses already
passed around (and compared) everywhere, validation must report every problem at once with its key
path in this project's wording, and no new dependency is needed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .problems import Problems, optional

METADATA_KEY = "setting"


@dataclass(frozen=True)
class Setting:
    """What a study file may hold under one key.

    ``kind`` is the scalar type checked by :func:`read_scalar` (None: the key has its own parser);
    ``minimum``/``maximum`` bound it (``open_bounds``: the ends excluded; ``note`` follows ">= N" in
    the message); ``choices`` lists its values; ``identity``: part of the problem a study's trials
    must agree on (``identity_when_empty=False``: only when the value is not empty); ``dump`` turns
    the value into its YAML form (default :func:`plain`); ``default_doc`` describes a default that
    is derived from other keys.
    """

    help: str
    kind: type | None = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    open_bounds: bool = False
    note: str = ""
    choices: Sequence[str] = ()
    identity: bool = False
    identity_when_empty: bool = True
    dump: Callable[[Any], Any] | None = None
    default_doc: str = ""


def setting(help: str, *, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING,
            **rules: Any) -> Any:
    """A dataclass field declared with its :class:`Setting` (``rules`` are its other attributes)."""
    return from_rule(Setting(help, **rules), default=default, default_factory=default_factory)


def from_rule(rule: Setting, *, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING,
              **changes: Any) -> Any:
    """A dataclass field declared with an existing :class:`Setting` (``changes`` replace its attributes)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={METADATA_KEY: dataclasses.replace(rule, **changes)})


def declared(cls: type) -> list[tuple[dataclasses.Field, Setting]]:
    """The fields of dataclass ``cls`` declared with :func:`setting`, in order."""
    return [(f, f.metadata[METADATA_KEY]) for f in dataclasses.fields(cls) if METADATA_KEY in f.metadata]


def keys_of(cls: type) -> tuple[str, ...]:
    """The YAML keys of a settings dataclass."""
    return tuple(f.name for f, _ in declared(cls))


def default_of(field: dataclasses.Field) -> Any:
    """A field's default value (None when it has none or a factory)."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def bound_problem(value: Any, rule: Setting) -> str | None:
    """What ``value`` breaks of the choices or bounds of ``rule`` (``open_bounds`` with a minimum
    alone: above it), or None."""
    if rule.choices and value not in rule.choices:
        return f"must be one of {', '.join(rule.choices)}, got {value!r}"
    if rule.minimum is not None and rule.maximum is not None:
        low, high = rule.minimum, rule.maximum
        inside = low < value < high if rule.open_bounds else low <= value <= high
        if not inside:
            ends = "()" if rule.open_bounds else "[]"
            return f"must be in {ends[0]}{low:g}, {high:g}{ends[1]}, got {value}"
    elif rule.minimum is not None and rule.open_bounds and not value > rule.minimum:
        return f"must be > {rule.minimum:g}{rule.note}, got {value}"
    elif rule.minimum is not None and value < rule.minimum:
        return f"must be >= {rule.minimum:g}{rule.note}, got {value}"
    return None


def check_bounds(value: Any, path: str, rule: Setting, problems: Problems) -> None:
    """Record a problem if ``value`` breaks the bounds or choices of ``rule``."""
    problem = bound_problem(value, rule)
    if problem:
        problems.add(path, problem)


def read_scalar(raw: Mapping[str, Any], field: dataclasses.Field, problems: Problems, prefix: str = "") -> Any:
    """The value of a scalar setting in ``raw`` (its default when absent), type and bounds checked."""
    rule: Setting = field.metadata[METADATA_KEY]
    path = f"{prefix}{field.name}"
    value = optional(raw, field.name, rule.kind, default_of(field), problems, path)
    if value is not None:
        check_bounds(value, path, rule, problems)
    return value


def plain(value: Any) -> Any:
    """A value in its YAML form: tuples as lists, paths as strings, mappings copied."""
    if isinstance(value, tuple):
        return [plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def dump(instance: Any, field: dataclasses.Field) -> Any:
    """The YAML form of one declared field of ``instance``."""
    rule: Setting = field.metadata[METADATA_KEY]
    value = getattr(instance, field.name)
    return rule.dump(value) if rule.dump else plain(value)
