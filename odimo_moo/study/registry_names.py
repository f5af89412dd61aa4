"""What a study is checked against: the names the plugins register (SoCs, models, strategies,
datasets) and the training parameters of the chosen strategy, with their types and rules."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import OdimoError, UsageError
from .problems import Problems


@dataclass
class Names:
    """What the registry knows: names, and the training parameters of the chosen strategy."""

    socs: Sequence[str] = ()
    models: Sequence[str] = ()
    strategies: Sequence[str] = ()
    datasets: Sequence[str] = ()
    dataset_options: dict[str, Sequence[str]] = field(default_factory=dict)
    parameter_kinds: dict[str, type] = field(default_factory=dict)
    check_value: Callable[[str, Any], str | None] = lambda name, value: None


def registry_names(plugins: Sequence[str], strategy: str, problems: Problems) -> Names | None:
    """What the plugins register; ``None`` (with a problem recorded) if they cannot be loaded."""
    try:
        return _load_names(tuple(plugins), strategy)
    except OdimoError as exc:
        problems.add("plugins", str(exc))
        return None


def _recipe_check() -> Callable[[str, Any], str | None]:
    """A check of one training parameter's value by :class:`~odimo_moo.recipe.Recipe`'s rules."""
    from ..recipe import Recipe

    recipe_names = set(Recipe.kinds())

    def check_value(name: str, value: Any) -> str | None:
        if name not in recipe_names:
            return None
        try:
            Recipe.from_params({name: value})
        except UsageError as exc:
            return str(exc).removeprefix("recipe: ")
        return None

    return check_value


@functools.lru_cache(maxsize=16)
def _load_names(plugins: tuple[str, ...], strategy: str) -> Names:
    """Load the plugins once per process and plugin list (validation runs for every config read)."""
    import inspect

    from ..data import DATASETS
    from ..recipe import Recipe
    from ..registry import PluginRegistry

    registry = PluginRegistry.load(plugins)
    socs, models, strategies = registry.socs(), registry.models(), registry.strategies()
    kinds = Recipe.kinds()
    if strategy in strategies:
        kinds.update({name: type(value) for name, value in strategies[strategy].obj.defaults().items()
                      if type(value) in (int, float, bool, str)})
    options = {name: [p.name for p in inspect.signature(loader).parameters.values()
                      if p.kind is inspect.Parameter.KEYWORD_ONLY] for name, loader in DATASETS.items()}
    return Names(sorted(socs), sorted(models), sorted(strategies), sorted(DATASETS), options, kinds,
                 _recipe_check())


def check_name(value: str | None, known: Sequence[str], path: str, what: str, problems: Problems) -> None:
    """Record a problem if ``value`` is not one of the registered names ``known``."""
    if value is not None and value not in known:
        problems.add(path, f"unknown {what} {value!r}; registered: {', '.join(known) or 'none'}")
