"""Constraints of a study: bounds on what a trial reports (a cost, or validation accuracy).

A study file declares them as ``constraints: {latency_cycles: {max: 20000}}``. Each bound becomes
one constraint value per trial, relative to its limit so that cycles and microjoules weigh alike:
``value / max - 1`` or ``1 - value / min``, met when <= 0 (Optuna's and pymoo's convention). The
objective stores them with ``Trial.set_constraint`` (the samplers that handle constraints read
them), pymoo gets them as inequality constraints ``G``, and reports build fronts from the trials
that meet every one. Test accuracy cannot be constrained: the outer loop never sees the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Protocol, Sequence

from ..front_point import COST_FIELDS

CONSTRAINABLE = (*COST_FIELDS.values(), "val_accuracy")
BOUNDS = ("max", "min")


class ProblemLog(Protocol):
    """Where validation records a problem (:class:`.problems.Problems`)."""

    def add(self, path: str, message: str) -> None: ...


@dataclass(frozen=True)
class Constraint:
    """``measure`` (a trial's ``latency_cycles``, ``energy_uj`` or ``val_accuracy``) at most
    (``bound="max"``) or at least (``"min"``) ``limit``."""

    measure: str
    bound: str
    limit: float

    @property
    def key(self) -> str:
        """Name of the constraint value, e.g. ``latency_cycles_max``."""
        return f"{self.measure}_{self.bound}"

    def violation(self, value: float) -> float:
        """Relative distance past the limit: <= 0 when met, 0.25 for 25 % over a maximum."""
        ratio = float(value) / self.limit
        return ratio - 1.0 if self.bound == "max" else 1.0 - ratio

    def describe(self) -> str:
        return f"{self.measure} {'<=' if self.bound == 'max' else '>='} {self.limit:g}"


def violations(constraints: Sequence[Constraint], measures: Mapping[str, Any]) -> dict[str, float]:
    """Constraint values of a trial whose reported ``measures`` (user attributes) hold every measure."""
    return {c.key: c.violation(measures[c.measure]) for c in constraints}


def is_feasible(values: Mapping[str, float]) -> bool:
    """Whether every constraint value is met (<= 0); no constraints: feasible."""
    return all(value <= 0.0 for value in values.values())


def to_spec(constraints: Sequence[Constraint]) -> dict[str, dict[str, float]]:
    """The constraints in the study file's form."""
    spec: dict[str, dict[str, float]] = {}
    for c in constraints:
        spec.setdefault(c.measure, {})[c.bound] = c.limit
    return spec


def from_spec(spec: Mapping[str, Mapping[str, float]] | None) -> tuple[Constraint, ...]:
    """The constraints of a validated spec (:func:`to_spec`'s form; a stored study config)."""
    return _canonical(Constraint(measure, bound, float(limit)) for measure, bounds in (spec or {}).items()
                      for bound, limit in bounds.items())


def _canonical(constraints: Iterable[Constraint]) -> tuple[Constraint, ...]:
    """Constraints in one order (that of CONSTRAINABLE, then max before min), however they were written."""
    return tuple(sorted(constraints, key=lambda c: (CONSTRAINABLE.index(c.measure), BOUNDS.index(c.bound))))


def parse(raw: Any, problems: ProblemLog) -> tuple[Constraint, ...]:
    """The ``constraints`` key of a study file; each problem recorded with its key path."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        problems.add("constraints", f"must be a mapping such as {{latency_cycles: {{max: 20000}}}}, got {raw!r}")
        return ()
    constraints = []
    for measure, bounds in raw.items():
        path = f"constraints.{measure}"
        if measure not in CONSTRAINABLE:
            hint = f" (write {COST_FIELDS[measure]}: the measure with its unit)" if measure in COST_FIELDS else ""
            problems.add(path, f"cannot be constrained{hint}; constrain one of {', '.join(CONSTRAINABLE)}")
            continue
        if not isinstance(bounds, dict) or not bounds:
            problems.add(path, f"must be a mapping with max and/or min, e.g. {{max: 20000}}, got {bounds!r}")
            continue
        limits = {}
        for bound, value in bounds.items():
            if bound not in BOUNDS:
                problems.add(f"{path}.{bound}", f"unknown bound; known: {', '.join(BOUNDS)}")
                continue
            limit = _positive(value)
            if limit is None:
                problems.add(f"{path}.{bound}", f"must be a number > 0, got {value!r}")
                continue
            limits[bound] = limit
        if "max" in limits and "min" in limits and limits["min"] >= limits["max"]:
            problems.add(path, f"min ({limits['min']:g}) must be < max ({limits['max']:g})")
            continue
        constraints += [Constraint(measure, bound, limit) for bound, limit in limits.items()]
    return _canonical(constraints)


def _positive(value: Any) -> float | None:
    """``value`` as a finite number > 0 (YAML reads ``2e4`` as a string), else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number < float("inf") else None
