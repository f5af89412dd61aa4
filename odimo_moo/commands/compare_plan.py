"""What ``odimo compare`` runs: a :class:`Plan` resolved from a preset, the options given and ``--set``,
and the routing of ``--set`` parameters to the compared methods."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..pareto import ReferencePoint
from ..recipe import DEFAULT_LAMBDAS, Recipe
from ..strategy import Strategy
from ..yaml_loader import InvalidYaml, parse_yaml
from .common import parse_assignments, setup_fields

BUDGETS = ("fixed", "matched")
#: Keys of a preset (and of --set) that are not Setup fields or method parameters.
PLAN_KEYS = ("title", "methods", "baselines", "lambdas", "seeds", "budget", "reference", "out", "params")
#: The strategy parameter that makes a method run once per lambda (:func:`takes_lambda`).
LAMBDA = "lambda"
#: Packaged presets (``--preset NAME``) live in this folder of :mod:`odimo_moo.studies`.
PRESET_FOLDER = "compare"


def split_list(text: str, option: str) -> list[str]:
    """The non-empty items of a comma-separated ``text``; empty is a usage error naming ``option``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError(f"{option} is empty")
    return items


def _names(value: Any, option: str) -> list[str]:
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return split_list(str(value), option)


def parse_lambdas(value: Any) -> list[float]:
    """Lambdas from ``"0,0.1"`` or a list of numbers, each checked by the recipe's rule for lambda."""
    try:
        return [Recipe.from_params({LAMBDA: item}).lambda_ for item in _names(value, "lambdas")]
    except UsageError as exc:
        raise UsageError(f"lambdas {value!r}: {exc}") from None


def parse_seeds(value: Any) -> list[int]:
    """Seeds from ``"0,1,2"``, a list, or one integer; distinct integers."""
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else _names(value, "seeds")
    try:
        seeds = [int(str(item)) for item in items]
    except ValueError as exc:
        raise UsageError(f"seeds {value!r}: expected comma-separated integers, e.g. 0,1,2") from exc
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"seeds {value!r}: a seed is repeated")
    return seeds


def parse_reference(value: Any) -> ReferencePoint | None:
    """The hypervolume reference point from ``"ACCURACY,COST"`` or a pair; ``None`` for the default."""
    if value is None:
        return None
    parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        accuracy, cost = (float(p) for p in parts)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"reference {value!r}: expected ACCURACY,COST, e.g. 0.5,2e6") from exc
    return ReferencePoint(accuracy=accuracy, cost=cost)


def packaged_presets() -> list[str]:
    """Names of the presets shipped in ``odimo_moo/studies/compare``."""
    folder = resources.files("odimo_moo.studies") / PRESET_FOLDER
    if not folder.is_dir():
        return []
    return sorted(entry.name[:-len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_preset(ref: str) -> tuple[dict[str, Any], str]:
    """A preset's mapping and where it came from: ``ref`` is a YAML file or a packaged preset's name."""
    path = Path(ref).expanduser()
    if path.is_file():
        source = str(path)
        text = path.read_text()
    elif ref in packaged_presets():
        entry = resources.files("odimo_moo.studies") / PRESET_FOLDER / f"{ref}.yaml"
        source, text = f"packaged preset {ref}", entry.read_text()
    else:
        raise UsageError(f"--preset {ref}: no such file or packaged preset; packaged presets: "
                         f"{', '.join(packaged_presets()) or 'none'}")
    try:
        data = parse_yaml(text)
    except InvalidYaml as exc:
        raise UsageError(f"--preset {source}: not valid YAML{exc.detail}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--preset {source}: expected a mapping of setup options and compare keys")
    known = set(setup_fields()) | set(PLAN_KEYS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"--preset {source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if not isinstance(data.get("params", {}), dict):
        raise UsageError(f"--preset {source}: params must be a mapping of method parameters")
    return data, source


@dataclass
class Plan:
    """A compare run, resolved from preset < command-line options < ``--set``."""

    setup_base: dict[str, Any]
    setup_overrides: dict[str, Any]
    seeds: list[int] | None
    methods: list[str] | None
    baselines: list[str]
    lambdas: list[float]
    budget: str
    reference: ReferencePoint | None
    out: str | None
    preset_params: dict[str, Any]
    set_params: dict[str, Any]
    title: str | None = None
    preset: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        """Every method parameter given: the preset's, then ``--set``'s over them."""
        return {**self.preset_params, **self.set_params}


def resolve_plan(args: argparse.Namespace) -> Plan:
    """Merge the preset (``--preset``), the options given and ``--set`` into one plan."""
    preset, source = load_preset(args.preset) if args.preset else ({}, None)
    assignments = parse_assignments(args.set)
    fields = set(setup_fields())
    plan_values = {k: v for k, v in preset.items() if k in PLAN_KEYS and k != "params"}
    options = {"seeds": args.seeds, "methods": args.methods, "baselines": args.baselines, "lambdas": args.lambdas,
               "budget": args.budget, "reference": args.reference, "out": args.out}
    plan_values.update({k: v for k, v in options.items() if v is not None})
    plan_values.update({k: v for k, v in assignments.items() if k in PLAN_KEYS and k != "params"})
    preset_params = dict(preset.get("params") or {})
    set_params = {k: v for k, v in assignments.items() if k not in fields and k not in PLAN_KEYS}
    for key in {**preset_params, **set_params}:
        if key.rpartition(".")[2] == LAMBDA:
            raise UsageError(f"{key}: give lambdas with --lambdas (or the preset's lambdas), not as a parameter")
    if "params" in assignments:
        raise UsageError("--set params=...: give method parameters one by one, --set KEY=VALUE or METHOD.KEY=VALUE")
    budget = str(plan_values.get("budget", "fixed"))
    if budget not in BUDGETS:
        raise UsageError(f"budget {budget!r}: choose one of {', '.join(BUDGETS)}")
    if "seeds" in plan_values and (hasattr(args, "seed") or "seed" in assignments):
        raise UsageError("give either --seed or --seeds (a list of seeds), not both")
    return Plan(
        setup_base={k: v for k, v in preset.items() if k in fields},
        setup_overrides={k: v for k, v in assignments.items() if k in fields},
        seeds=parse_seeds(plan_values["seeds"]) if "seeds" in plan_values else None,
        methods=_names(plan_values["methods"], "methods") if "methods" in plan_values else None,
        baselines=_names(plan_values.get("baselines", "heuristic"), "baselines"),
        lambdas=parse_lambdas(plan_values.get("lambdas", list(DEFAULT_LAMBDAS))),
        budget=budget,
        reference=parse_reference(plan_values.get("reference")),
        out=None if plan_values.get("out") is None else str(plan_values["out"]),
        preset_params=preset_params,
        set_params=set_params,
        title=None if plan_values.get("title") is None else str(plan_values["title"]),
        preset=source,
    )


def route_parameters(assignments: dict[str, Any], strategies: dict[str, Strategy]) -> dict[str, dict[str, Any]]:
    """Per method, the ``--set`` values it takes (:func:`takers`). A key no chosen method has is a
    usage error."""
    routed: dict[str, dict[str, Any]] = {name: {} for name in strategies}
    for key, value in assignments.items():
        method, dot, name = key.partition(".")
        if dot and method not in strategies:
            raise UsageError(f"--set {key}: {method!r} is not one of the compared methods ({', '.join(strategies)})")
        if dot and name not in strategies[method].defaults():
            raise UsageError(f"--set {key}: method {method!r} has no parameter {name!r}; it has "
                             f"{', '.join(strategies[method].defaults())}")
        found = takers(key, strategies)
        if not found:
            raise UsageError(f"--set {key}: no compared method has this parameter (nor is it a setup option "
                             f"or compare key)")
        for m in found:
            routed[m][name if dot else key] = value
    return routed


def takers(key: str, strategies: dict[str, Strategy]) -> list[str]:
    """The methods of ``strategies`` that take parameter ``KEY`` (every one whose defaults have it) or
    ``METHOD.KEY`` (that method, if it is one of them and has it)."""
    method, dot, name = key.partition(".")
    if not dot:
        return [m for m, strategy in strategies.items() if key in strategy.defaults()]
    return [method] if method in strategies and name in strategies[method].defaults() else []


def preset_parameters(params: dict[str, Any], strategies: dict[str, Strategy], registered: dict[str, Strategy],
                      source: str | None) -> dict[str, Any]:
    """The preset's method parameters that a compared method takes. A preset is written for several
    methods, so a ``KEY`` (or ``METHOD.KEY``) that only methods left out of this comparison take is
    skipped; one that no ``registered`` method has is a usage error naming the preset."""
    kept: dict[str, Any] = {}
    for key, value in params.items():
        if not takers(key, registered):
            raise UsageError(f"--preset {source}: params.{key}: no registered method has this parameter; remove "
                             f"it from the preset, or load the plugin whose method has it with --plugin")
        if takers(key, strategies):
            kept[key] = value
    return kept
