"""Reading what a comparison compares: outcomes, shared warmups, one-shot search records, and what
an ``odimo compare`` run recorded (its run record and matched budgets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ..errors import UsageError
from ..front_point import COST_FIELDS, REQUIRED_FIELDS
from ..strategy import Outcome

#: Files read by :func:`load_outcomes`: per-run results, study results and fronts, baseline lists.
OUTCOME_FILES = ("result.json", "results.json", "pareto.json", "baselines.json")
#: Per-seed record of the shared warmup written by ``odimo compare`` (read back by :func:`load_warmups`).
WARMUP_FILE = "warmup.json"
#: A one-shot search's record (read back by :func:`load_searches`).
SEARCH_FILE = "search.json"
#: What an ``odimo compare`` run recorded about itself (command, setup, seeds, methods, recipes, machine).
RUN_FILE = "compare-run.json"
#: Per seed, how each one-shot method's budget was matched to ODiMO's (read back by :func:`load_budgets`).
BUDGET_FILE = "budget.json"


def find_outcomes(payload: Any) -> list[Outcome]:
    """Every outcome record (a dict with the :data:`~odimo_moo.front_point.REQUIRED_FIELDS`) anywhere
    in a JSON document: a single outcome, a list of them, or nested under any keys."""
    if isinstance(payload, dict):
        if all(key in payload for key in REQUIRED_FIELDS):
            return [Outcome.from_dict(payload)]
        return [o for value in payload.values() for o in find_outcomes(value)]
    if isinstance(payload, list):
        return [o for item in payload for o in find_outcomes(item)]
    return []


def _key(outcome: Outcome) -> tuple:
    return (outcome.strategy, outcome.label, outcome.seed, outcome.accuracy, outcome.val_accuracy,
            *(getattr(outcome, name) for name in COST_FIELDS.values()))


def unique(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """Outcomes without repeats (the same point read from a run's result.json and a study's results)."""
    seen: dict[tuple, Outcome] = {}
    for outcome in outcomes:
        seen.setdefault(_key(outcome), outcome)
    return list(seen.values())


def _read_json(folder: Path, path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--from {folder}: cannot read {path} ({exc})") from exc


def load_outcomes(folder: Path) -> list[Outcome]:
    """Outcomes found under ``folder`` (recursively) in files named as in :data:`OUTCOME_FILES`."""
    if not folder.is_dir():
        raise UsageError(f"--from {folder}: no such folder")
    found = []
    for path in sorted(p for name in OUTCOME_FILES for p in folder.rglob(name)):
        try:
            found += find_outcomes(_read_json(folder, path))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, UsageError):
                raise
            raise UsageError(f"--from {folder}: {path} holds a malformed result ({exc})") from exc
    outcomes = unique(found)
    if not outcomes:
        raise UsageError(f"--from {folder}: no results found (looked for {', '.join(OUTCOME_FILES)} written by "
                         f"odimo search, run or compare)")
    return outcomes


def load_warmups(folder: Path) -> dict[int | None, list[dict[str, Any]]]:
    """Per seed, the warmup records (``epochs``, ``wall_s``, ``cpu_s``) of the :data:`WARMUP_FILE`
    files under ``folder`` (none in folders of other commands or older versions)."""
    found: dict[int | None, list[dict[str, Any]]] = {}
    for path in sorted(folder.rglob(WARMUP_FILE)):
        data = _read_json(folder, path)
        if isinstance(data, dict) and isinstance(data.get("warmups"), list):
            found.setdefault(data.get("seed"), []).extend(data["warmups"])
    return found


def load_searches(folder: Path) -> list[dict[str, Any]]:
    """The one-shot search records (:data:`SEARCH_FILE`, with their strategy and seed) under ``folder``."""
    found = []
    for path in sorted(folder.rglob(SEARCH_FILE)):
        data = _read_json(folder, path)
        if isinstance(data, dict) and "strategy" in data and isinstance(data.get("points"), list):
            found.append(data)
    return found


def load_run_record(folders: Iterable[Path]) -> dict[str, Any]:
    """The first :data:`RUN_FILE` found in ``folders`` (``{}`` if none: folders of other commands)."""
    for folder in folders:
        if (folder / RUN_FILE).is_file():
            return _read_json(folder, folder / RUN_FILE)
    return {}


def load_budgets(folders: Iterable[Path]) -> dict[str, Any]:
    """Per seed, the matched budgets recorded (:data:`BUDGET_FILE`) under ``folders``."""
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob(BUDGET_FILE)):
            found[path.parent.name.removeprefix("seed-")] = _read_json(folder, path)
    return found
