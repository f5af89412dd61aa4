"""The search space of a study in the two drivers' terms: Optuna suggestions, and pymoo's
real-valued decision vectors (log ranges as log10, choices as indices)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import optuna

from .schema import Choice, Param


def suggest(trial: optuna.Trial, space: Sequence[Param], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Sample every dimension (enqueued values come back as they were enqueued); ``fixed`` values
    that no distribution can hold (0 on a log range) are used as they are and not sampled."""
    params = {}
    for param in space:
        if param.name in fixed:
            params[param.name] = fixed[param.name]
        elif isinstance(param, Choice):
            params[param.name] = trial.suggest_categorical(param.name, param.choices)
        elif param.integer:
            params[param.name] = trial.suggest_int(param.name, int(param.low), int(param.high), log=param.log)
        else:
            params[param.name] = trial.suggest_float(param.name, param.low, param.high, log=param.log)
    return params


def split_enqueued(space: Sequence[Param], point: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(values a distribution holds, values it cannot hold) of an enqueued point."""
    by_name = {p.name: p for p in space}
    inside = {name: value for name, value in point.items() if by_name[name].contains(value)}
    outside = {name: value for name, value in point.items() if name not in inside}
    return inside, outside


def bounds(space: Sequence[Param]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of pymoo's decision vector."""
    low, high = [], []
    for param in space:
        if isinstance(param, Choice):
            low.append(0.0)
            high.append(float(len(param.choices)))
        elif param.log:
            low.append(math.log10(param.low))
            high.append(math.log10(param.high))
        else:
            low.append(float(param.low))
            high.append(float(param.high))
    return np.array(low), np.array(high)


def decode(space: Sequence[Param], x: Sequence[float]) -> dict[str, Any]:
    """Parameter values of a decision vector (clipped into the space, integers rounded)."""
    params: dict[str, Any] = {}
    for param, value in zip(space, x):
        if isinstance(param, Choice):
            params[param.name] = param.choices[min(int(value), len(param.choices) - 1)]
            continue
        number = 10.0 ** float(value) if param.log else float(value)
        number = min(max(number, param.low), param.high)
        params[param.name] = int(round(number)) if param.integer else number
    return params


def encode(space: Sequence[Param], params: Mapping[str, Any], fill: np.ndarray) -> np.ndarray:
    """Decision vector of ``params``; dimensions they don't give are taken from ``fill``."""
    x = np.array(fill, dtype=float)
    for i, param in enumerate(space):
        if param.name not in params:
            continue
        value = params[param.name]
        if isinstance(param, Choice):
            x[i] = param.choices.index(value) + 0.5
        else:
            x[i] = math.log10(value) if param.log else float(value)
    return x


def same_params(space: Sequence[Param], a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two parameter sets name the same point (floats compared to 1e-9 relative)."""
    for param in space:
        left, right = a.get(param.name), b.get(param.name)
        if isinstance(left, float) or isinstance(right, float):
            if left is None or right is None or not math.isclose(left, right, rel_tol=1e-9, abs_tol=0.0):
                return False
        elif left != right:
            return False
    return True
