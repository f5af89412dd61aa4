"""Study configuration: the YAML schema read by ``odimo run``, ``--set`` overrides, and validation.

A study file names the problem (SoC, model, data, cost metrics), the strategy and its fixed training
parameters, the outer loop's search space (lambda and hyperparameters), the driver and its sampler,
known-good points to try first, the trial budget and where everything is stored. Validation reports
every problem at once, one line each with its key path, as a :class:`~odimo_moo.errors.UsageError`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

from ..errors import OdimoError, UsageError
from ..strategy import COST_FIELDS
from ..yaml_loader import InvalidYaml, parse_yaml
from . import constraints as constraint_rules
from . import storage_url
from .constraints import Constraint

DRIVERS = ("optuna", "pymoo")
METRIC_NAMES = ("latency", "energy")
DEVICE_NAMES = ("auto", "cpu", "cuda")
PACKAGED_STUDIES = "odimo_moo.studies"
DEFAULT_SAMPLER = {"optuna": "tpe", "pymoo": "nsga2"}

# Settings each sampler accepts from YAML, with their types (the study seed seeds every sampler).
SAMPLER_SETTINGS: dict[str, dict[str, dict[str, type]]] = {
    "optuna": {
        "tpe": {"n_startup_trials": int, "n_ei_candidates": int, "multivariate": bool, "group": bool,
                "constant_liar": bool, "consider_endpoints": bool, "prior_weight": float},
        "nsga2": {"population_size": int, "mutation_prob": float, "crossover_prob": float,
                  "swapping_prob": float},
        "random": {},
        "gp": {"n_startup_trials": int, "deterministic_objective": bool},
    },
    "pymoo": {
        "nsga2": {"pop_size": int, "n_offsprings": int},
    },
}

TOP_LEVEL_KEYS = ("name", "soc", "model", "dataset", "data_root", "data_limit", "image_size", "download",
                  "val_fraction",
                  "exclude", "metrics", "strategy", "training", "search_space", "driver", "sampler", "enqueue",
                  "trials", "storage", "out", "seed", "device", "threads", "plugins", "heartbeat", "constraints",
                  "artifacts")
REQUIRED_KEYS = ("soc", "model", "dataset", "search_space")
HEARTBEAT_KEYS = ("interval", "grace", "max_retry")


@dataclass(frozen=True)
class Range:
    """A numeric range of the search space; ``log`` ranges are sampled uniformly in log space."""

    name: str
    low: float
    high: float
    log: bool
    integer: bool

    def contains(self, value: Any) -> bool:
        return self.low <= value <= self.high

    def to_spec(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Choice:
    """A categorical dimension of the search space."""

    name: str
    choices: tuple[Any, ...]

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def to_spec(self) -> dict[str, Any]:
        return {"choices": list(self.choices)}


Param = Union[Range, Choice]


@dataclass(frozen=True)
class SamplerSpec:
    """The sampler (Optuna) or algorithm (pymoo) of the outer loop, with its settings."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Heartbeat:
    """Heartbeat of running trials: a trial silent for ``grace`` seconds is failed and retried
    (at most ``max_retry`` times) in the same work folder, resuming from its checkpoints."""

    interval: int = 10
    grace: int = 30
    max_retry: int = 3


@dataclass(frozen=True)
class StudyConfig:
    """A validated study. Paths are absolute; ``storage`` is a SQLAlchemy URL or ``journal:///PATH``
    (:mod:`.storage_url`); ``artifacts`` is the folder of the Optuna artifact store (None: off)."""

    name: str
    soc: str
    model: str
    dataset: str
    search_space: tuple[Param, ...]
    out: Path
    storage: str
    data_root: str | None = None
    data_limit: int | None = None
    image_size: int | None = None
    download: bool = False
    val_fraction: float = 0.1
    exclude: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ("latency",)
    strategy: str = "odimo"
    training: dict[str, Any] = field(default_factory=dict)
    driver: str = "optuna"
    sampler: SamplerSpec = field(default_factory=lambda: SamplerSpec("tpe"))
    enqueue: tuple[dict[str, Any], ...] = ()
    trials: int = 10
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    plugins: tuple[str, ...] = ()
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    constraints: tuple[Constraint, ...] = ()
    artifacts: Path | None = None

    def objective_names(self) -> list[str]:
        """Names of the study's objectives, in Optuna's order: validation accuracy, then the costs."""
        return ["val_accuracy"] + [COST_FIELDS[m] for m in self.metrics]

    def setup(self, progress: bool = True) -> Any:
        """The :class:`~odimo_moo.workbench.Setup` every trial of the study shares; the first metric
        is the cost in ODiMO's loss."""
        from ..workbench import Setup

        return Setup(soc=self.soc, model=self.model, dataset=self.dataset, metric=self.metrics[0],
                     data_root=self.data_root, download=self.download, data_limit=self.data_limit,
                     image_size=self.image_size, val_fraction=self.val_fraction, seed=self.seed,
                     device=self.device, plugins=self.plugins, exclude=self.exclude, progress=progress)

    def identity(self) -> dict[str, Any]:
        """What defines the optimisation problem: trials of one study must agree on all of it (the
        problem instance as :meth:`Setup.identity` defines it, data_root included; constraints too,
        when there are any: each trial stores its constraint values)."""
        identity = {
            **self.setup().identity(),  # the trials' checkpoints are keyed by the same fields
            "metrics": list(self.metrics), "strategy": self.strategy, "training": self.training,
            "search_space": {p.name: p.to_spec() for p in self.search_space},
        }
        if self.constraints:
            identity["constraints"] = constraint_rules.to_spec(self.constraints)
        return json.loads(json.dumps(identity, sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """The study in the YAML schema (loading it back gives an equal config)."""
        return {
            "name": self.name, "soc": self.soc, "model": self.model, "dataset": self.dataset,
            "data_root": self.data_root, "data_limit": self.data_limit, "image_size": self.image_size,
            "download": self.download,
            "val_fraction": self.val_fraction, "exclude": list(self.exclude), "metrics": list(self.metrics),
            "strategy": self.strategy, "training": dict(self.training),
            "search_space": {p.name: p.to_spec() for p in self.search_space},
            "driver": self.driver, "sampler": {"name": self.sampler.name, "settings": dict(self.sampler.settings)},
            "enqueue": [dict(point) for point in self.enqueue], "trials": self.trials, "storage": self.storage,
            "out": str(self.out), "seed": self.seed, "device": self.device, "threads": self.threads,
            "plugins": list(self.plugins),
            "heartbeat": dataclasses.asdict(self.heartbeat),
            "constraints": constraint_rules.to_spec(self.constraints),
            "artifacts": str(self.artifacts) if self.artifacts is not None else False,
        }


# ----------------------------------------------------------------------------- reading files
def packaged_studies() -> list[str]:
    """Names of the study files shipped in :mod:`odimo_moo.studies`."""
    return sorted(entry.name[:-len(".yaml")] for entry in resources.files(PACKAGED_STUDIES).iterdir()
                  if entry.name.endswith(".yaml"))


def read_study_file(ref: str | None) -> tuple[dict[str, Any], str]:
    """The raw mapping of a study file and a description of where it came from.

    ``ref`` is a path, or the name of a packaged study (``None``: ``quickstart``).
    """
    ref = ref or "quickstart"
    path = Path(ref).expanduser()
    if path.is_file():
        text, source = _read_text(path), str(path)
    elif ref in packaged_studies():
        text, source = (resources.files(PACKAGED_STUDIES) / f"{ref}.yaml").read_text(), f"packaged study {ref}"
    else:
        raise UsageError(f"no study file {ref!r}; give a YAML path or one of the packaged studies: "
                         f"{', '.join(packaged_studies())}")
    try:
        raw = parse_yaml(text)
    except InvalidYaml as exc:  # one line: where, and what is wrong
        raise UsageError(f"{source} is not valid YAML{exc.detail}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: a study file must be a mapping of keys to values, got {type(raw).__name__}")
    raw.setdefault("name", path.stem if path.is_file() else ref)
    return raw, source


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read study file {path}: {exc}") from exc


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``raw`` with ``{"a.b": value}`` overrides applied (nested keys created); problems as lines."""
    result = json.loads(json.dumps(raw, default=str))
    problems = []
    for dotted, value in overrides.items():
        keys = dotted.split(".")
        if any(not key for key in keys):
            problems.append(f"--set {dotted}: empty key in the dotted path")
            continue
        node = result
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                problems.append(f"--set {dotted}: {'.'.join(keys[:depth + 1])} is not a mapping "
                                f"(it is {child!r})")
                break
            node = child
        else:
            node[keys[-1]] = value
    return result, problems


def load_study(ref: str | None, overrides: Mapping[str, Any] | None = None, *,
               plugins: Sequence[str] = ()) -> StudyConfig:
    """Read, override and validate a study (see :func:`validate`)."""
    raw, source = read_study_file(ref)
    raw, problems = apply_overrides(raw, overrides or {})
    return validate(raw, source, extra_plugins=plugins, earlier_problems=problems)


# ----------------------------------------------------------------------------- validation
class _Problems:
    """Collects one line per problem, prefixed by its key path."""

    def __init__(self, lines: Sequence[str] = ()) -> None:
        self.lines = list(lines)

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path}: {message}")


def _kind_name(kind: type) -> str:
    return {float: "a number", int: "an integer", bool: "true or false", str: "a string"}[kind]


def _coerce(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` or raise ValueError. Numbers given as strings (YAML reads ``1e-4``
    as a string) are accepted; booleans are never numbers."""
    if kind is bool:
        if isinstance(value, bool):
            return value
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


def _typed(raw: Any, path: str, kind: type, problems: _Problems) -> Any:
    try:
        return _coerce(raw, kind)
    except (TypeError, ValueError):
        problems.add(path, f"must be {_kind_name(kind)}, got {raw!r}")
        return None


def _optional(raw: Mapping[str, Any], key: str, kind: type, default: Any, problems: _Problems) -> Any:
    if raw.get(key) is None:
        return default
    value = _typed(raw[key], key, kind, problems)
    return default if value is None else value


def _string_list(raw: Any, path: str, problems: _Problems) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        problems.add(path, f"must be a list of strings, got {raw!r}")
        return ()
    items = []
    for i, item in enumerate(raw):
        value = _typed(item, f"{path}[{i}]", str, problems)
        if value is not None:
            items.append(value)
    return tuple(items)


def _unknown_keys(raw: Mapping[str, Any], known: Sequence[str], path: str, problems: _Problems) -> None:
    for key in raw:
        if key not in known:
            where = f"{path}.{key}" if path else str(key)
            problems.add(where, f"unknown key; known keys: {', '.join(known)}")


def _mapping(raw: Any, path: str, problems: _Problems) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(path, f"must be a mapping, got {raw!r}")
        return {}
    return raw


@dataclass
class _Names:
    """What the registry knows: names, and the training parameters of the chosen strategy."""

    socs: Sequence[str] = ()
    models: Sequence[str] = ()
    strategies: Sequence[str] = ()
    datasets: Sequence[str] = ()
    dataset_options: dict[str, Sequence[str]] = field(default_factory=dict)
    parameter_kinds: dict[str, type] = field(default_factory=dict)
    check_value: Callable[[str, Any], str | None] = lambda name, value: None


def _registry_names(plugins: Sequence[str], strategy: str, problems: _Problems) -> _Names | None:
    """What the plugins register; ``None`` (with a problem recorded) if they cannot be loaded."""
    try:
        return _load_names(tuple(plugins), strategy)
    except OdimoError as exc:
        problems.add("plugins", str(exc))
        return None


@functools.lru_cache(maxsize=16)
def _load_names(plugins: tuple[str, ...], strategy: str) -> _Names:
    """Load the plugins once per process and plugin list (validation runs for every config read)."""
    import inspect

    from ..data import DATASETS
    from ..recipe import Recipe
    from ..registry import PluginRegistry

    registry = PluginRegistry.load(plugins)
    socs, models, strategies = registry.socs(), registry.models(), registry.strategies()
    kinds = {f.name: type(f.default) for f in dataclasses.fields(Recipe)}
    if strategy in strategies:
        kinds.update({name: type(value) for name, value in strategies[strategy].obj.defaults().items()
                      if type(value) in (int, float, bool, str)})
    kinds["lambda"] = float
    recipe_names = {f.name for f in dataclasses.fields(Recipe)} | {"lambda"}

    def check_value(name: str, value: Any) -> str | None:
        if name not in recipe_names:
            return None
        try:
            Recipe.from_params({name: value})
        except UsageError as exc:
            return str(exc).removeprefix("recipe: ")
        return None

    options = {name: [p.name for p in inspect.signature(loader).parameters.values()
                      if p.kind is inspect.Parameter.KEYWORD_ONLY] for name, loader in DATASETS.items()}
    return _Names(sorted(socs), sorted(models), sorted(strategies), sorted(DATASETS), options, kinds,
                  check_value)


def _check_name(value: str | None, known: Sequence[str], path: str, what: str, problems: _Problems) -> None:
    if value is not None and value not in known:
        problems.add(path, f"unknown {what} {value!r}; registered: {', '.join(known) or 'none'}")


def _training(raw: Any, names: _Names | None, problems: _Problems) -> dict[str, Any]:
    training = {}
    for key, value in _mapping(raw, "training", problems).items():
        path = f"training.{key}"
        if names is None:
            training[key] = value
            continue
        if key not in names.parameter_kinds:
            problems.add(path, f"unknown training parameter; known: {', '.join(sorted(names.parameter_kinds))}")
            continue
        typed = _typed(value, path, names.parameter_kinds[key], problems)
        if typed is None:
            continue
        message = names.check_value(key, typed)
        if message:
            problems.add(path, message)
            continue
        training[key] = typed
    return training


def _range(name: str, spec: Any, kind: type, path: str, names: _Names, problems: _Problems) -> Param | None:
    if isinstance(spec, list):
        if len(spec) != 2:
            problems.add(path, f"a range is [low, high], got {spec!r}")
            return None
        spec = {"low": spec[0], "high": spec[1]}
    _unknown_keys(spec, ("low", "high", "log"), path, problems)
    if "low" not in spec or "high" not in spec:
        problems.add(path, "a range needs both low and high")
        return None
    before = len(problems.lines)
    low = _typed(spec["low"], f"{path}.low", kind, problems)
    high = _typed(spec["high"], f"{path}.high", kind, problems)
    log = kind is float if spec.get("log") is None else _typed(spec["log"], f"{path}.log", bool, problems)
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


def _choice(name: str, spec: Mapping[str, Any], kind: type, path: str, names: _Names,
            problems: _Problems) -> Param | None:
    _unknown_keys(spec, ("choices",), path, problems)
    raw = spec["choices"]
    if not isinstance(raw, list) or not raw:
        problems.add(f"{path}.choices", f"must be a non-empty list, got {raw!r}")
        return None
    before = len(problems.lines)
    choices = []
    for i, item in enumerate(raw):
        value = _typed(item, f"{path}.choices[{i}]", kind, problems)
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


def _search_space(raw: Any, training: Mapping[str, Any], names: _Names | None,
                  problems: _Problems) -> tuple[Param, ...]:
    if raw is None:
        return ()
    space = _mapping(raw, "search_space", problems)
    if isinstance(raw, dict) and not space:
        problems.add("search_space", "must name at least one parameter, e.g. lambda: [1.0e-6, 1.0e-3]")
    if names is None:
        return ()
    params = []
    for name, spec in space.items():
        path = f"search_space.{name}"
        if name not in names.parameter_kinds:
            problems.add(path, f"unknown parameter; known: {', '.join(sorted(names.parameter_kinds))}")
            continue
        if name in training or (name == "lambda" and "cost_weight" in training) or \
                (name == "cost_weight" and "lambda" in training):
            problems.add(path, "is also fixed under training; keep it in one place")
            continue
        kind = names.parameter_kinds[name]
        if isinstance(spec, dict) and "choices" in spec:
            param = _choice(name, spec, kind, path, names, problems)
        elif isinstance(spec, (dict, list)) and kind in (int, float):
            param = _range(name, spec, kind, path, names, problems)
        elif kind in (int, float):
            problems.add(path, f"must be a range [low, high], {{low, high, log}} or {{choices: [...]}}, "
                               f"got {spec!r}")
            continue
        else:
            problems.add(path, f"{name} takes {_kind_name(kind)}: give {{choices: [...]}}, got {spec!r}")
            continue
        if param is not None:
            params.append(param)
    if "lambda" in space and "cost_weight" in space:
        problems.add("search_space.cost_weight", "is lambda under another name; keep only lambda")
    return tuple(params)


def _sampler(raw: Any, driver: str, problems: _Problems) -> SamplerSpec:
    default = DEFAULT_SAMPLER.get(driver, "tpe")
    if raw is None:
        return SamplerSpec(default)
    if isinstance(raw, str):
        raw = {"name": raw}
    spec = _mapping(raw, "sampler", problems)
    _unknown_keys(spec, ("name", "settings"), "sampler", problems)
    name = default if spec.get("name") is None else _typed(spec["name"], "sampler.name", str, problems)
    known = SAMPLER_SETTINGS.get(driver, {})
    if name is None:
        return SamplerSpec(default)
    if name not in known:
        problems.add("sampler.name", f"driver {driver} offers {', '.join(known)}, got {name!r}")
        return SamplerSpec(default)
    settings = {}
    for key, value in _mapping(spec.get("settings"), "sampler.settings", problems).items():
        path = f"sampler.settings.{key}"
        if key not in known[name]:
            problems.add(path, f"unknown setting of {name}; known: {', '.join(known[name]) or 'none'}")
            continue
        typed = _typed(value, path, known[name][key], problems)
        if typed is not None:
            settings[key] = typed
    for key in ("n_startup_trials", "population_size", "pop_size", "n_offsprings"):
        if key in settings and settings[key] < 1:
            problems.add(f"sampler.settings.{key}", f"must be >= 1, got {settings[key]}")
    for key in ("mutation_prob", "crossover_prob", "swapping_prob"):
        if key in settings and not 0 <= settings[key] <= 1:
            problems.add(f"sampler.settings.{key}", f"must be in [0, 1], got {settings[key]}")
    return SamplerSpec(name, settings)


def _enqueue(raw: Any, space: tuple[Param, ...], declared: Sequence[str], names: _Names | None,
             problems: _Problems) -> tuple[dict[str, Any], ...]:
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
            param = by_name[name]
            kind = names.parameter_kinds[name] if names else float
            typed = _typed(value, f"{path}.{name}", kind, problems)
            if typed is None:
                continue
            zero_on_log = isinstance(param, Range) and param.log and typed == 0
            if not (param.contains(typed) or zero_on_log):
                allowed = (f"in [{param.low:g}, {param.high:g}]" + (" or exactly 0" if param.log else "")
                           if isinstance(param, Range) else f"one of {list(param.choices)}")
                problems.add(f"{path}.{name}", f"{typed!r} is outside the search space: must be {allowed}")
                continue
            message = names.check_value(name, typed) if names else None
            if message:
                problems.add(f"{path}.{name}", message)
                continue
            values[name] = typed
        points.append(values)
    return tuple(points)


def _heartbeat(raw: Any, problems: _Problems) -> Heartbeat:
    spec = _mapping(raw, "heartbeat", problems)
    _unknown_keys(spec, HEARTBEAT_KEYS, "heartbeat", problems)
    defaults = Heartbeat()
    values = {}
    for key in HEARTBEAT_KEYS:
        value = getattr(defaults, key) if spec.get(key) is None else _typed(spec[key], f"heartbeat.{key}",
                                                                            int, problems)
        values[key] = getattr(defaults, key) if value is None else value
    if values["interval"] < 1:
        problems.add("heartbeat.interval", f"must be >= 1 second, got {values['interval']}")
    if values["grace"] <= values["interval"]:
        problems.add("heartbeat.grace", f"must be > heartbeat.interval ({values['interval']} s), "
                                        f"got {values['grace']}")
    if values["max_retry"] < 0:
        problems.add("heartbeat.max_retry", f"must be >= 0, got {values['max_retry']}")
    return Heartbeat(**values)


def _storage_url(raw: Any, out: Path, problems: _Problems) -> str:
    if raw is None:
        return f"sqlite:///{out / 'study.db'}"
    url = _typed(raw, "storage", str, problems)
    if url is None:
        return ""
    try:
        return storage_url.normalize(url)
    except ValueError as exc:
        problems.add("storage", str(exc))
        return url


def _artifacts(raw: Any, out: Path, problems: _Problems) -> Path | None:
    """The artifact store's folder: ``<out>/artifacts`` by default, a path, or false (none)."""
    if raw is None:
        return out / "artifacts"
    if raw is False:
        return None
    if not isinstance(raw, str) or not raw.strip():
        problems.add("artifacts", f"must be a folder for the trials' artifact store, or false for none; "
                                  f"got {raw!r}")
        return None
    return Path(raw).expanduser().resolve()


def validate(raw: Mapping[str, Any], source: str = "study", *, extra_plugins: Sequence[str] = (),
             earlier_problems: Sequence[str] = ()) -> StudyConfig:
    """A :class:`StudyConfig` from a raw mapping, or one UsageError listing every problem.

    Names of SoC, model, strategy and dataset are checked against the plugins the study loads
    (its ``plugins`` plus ``extra_plugins``); training parameters, ranges and choices against the
    strategy's parameters and :class:`~odimo_moo.recipe.Recipe`'s rules.
    """
    problems = _Problems(earlier_problems)
    _unknown_keys(raw, TOP_LEVEL_KEYS, "", problems)
    for key in REQUIRED_KEYS:
        if raw.get(key) is None:
            problems.add(key, "is required")
    name = _optional(raw, "name", str, "study", problems)
    if not name.strip() or "/" in name:
        problems.add("name", f"must be a non-empty name without '/', got {name!r}")
    soc, model, dataset = (_optional(raw, key, str, None, problems) for key in ("soc", "model", "dataset"))
    strategy = _optional(raw, "strategy", str, "odimo", problems)
    plugins = tuple(extra_plugins) + _string_list(raw.get("plugins"), "plugins", problems)
    names = _registry_names(plugins, strategy, problems)
    if names is not None:
        _check_name(soc, names.socs, "soc", "SoC", problems)
        _check_name(model, names.models, "model", "model", problems)
        _check_name(strategy, names.strategies, "strategy", "strategy", problems)
        _check_name(dataset, names.datasets, "dataset", "dataset", problems)

    metrics = _string_list(raw.get("metrics", ["latency"]), "metrics", problems)
    for i, metric in enumerate(metrics):
        if metric not in METRIC_NAMES:
            problems.add(f"metrics[{i}]", f"unknown metric {metric!r}; choose from {', '.join(METRIC_NAMES)}")
    if not metrics or len(set(metrics)) != len(metrics):
        problems.add("metrics", f"must list latency and/or energy once each, got {list(metrics)}")
    data_limit = _optional(raw, "data_limit", int, None, problems)
    if data_limit is not None and data_limit < 1:
        problems.add("data_limit", f"must be >= 1 sample per split, got {data_limit}")
    image_size = _optional(raw, "image_size", int, None, problems)
    if image_size is not None and image_size < 1:
        problems.add("image_size", f"must be >= 1 pixel, got {image_size}")
    if image_size is not None and names is not None and dataset in names.datasets and \
            "image_size" not in names.dataset_options[dataset]:
        problems.add("image_size", f"dataset {dataset} has a fixed input size")
    val_fraction = _optional(raw, "val_fraction", float, 0.1, problems)
    if not 0 < val_fraction < 1:
        problems.add("val_fraction", f"must be in (0, 1), got {val_fraction}")
    driver = _optional(raw, "driver", str, "optuna", problems)
    if driver not in DRIVERS:
        problems.add("driver", f"must be one of {', '.join(DRIVERS)}, got {driver!r}")
    trials = _optional(raw, "trials", int, 10, problems)
    if trials < 1:
        problems.add("trials", f"must be >= 1, got {trials}")
    device = _optional(raw, "device", str, "auto", problems)
    if device not in DEVICE_NAMES:
        problems.add("device", f"must be one of {', '.join(DEVICE_NAMES)}, got {device!r}")
    threads = _optional(raw, "threads", int, None, problems)
    if threads is not None and threads < 1:
        problems.add("threads", f"must be >= 1 (or null for PyTorch's default), got {threads}")
    out = Path(_optional(raw, "out", str, f"runs/{name}", problems)).expanduser().resolve()

    training = _training(raw.get("training"), names, problems)
    for key in ("warmup_epochs", "search_epochs", "finetune_epochs"):
        if key in raw:
            problems.add(key, f"training parameters go under training: (training.{key})")
    space = _search_space(raw.get("search_space"), training, names, problems)
    declared = list(raw["search_space"]) if isinstance(raw.get("search_space"), dict) else []
    enqueue = _enqueue(raw.get("enqueue"), space, declared, names, problems)
    if 1 <= trials < len(enqueue):
        problems.add("enqueue", f"{len(enqueue)} points but only {trials} trials; raise trials or drop points")
    config = StudyConfig(
        name=name, soc=soc or "", model=model or "", dataset=dataset or "", search_space=space, out=out,
        storage=_storage_url(raw.get("storage"), out, problems),
        data_root=_optional(raw, "data_root", str, None, problems), data_limit=data_limit, image_size=image_size,
        download=_optional(raw, "download", bool, False, problems), val_fraction=val_fraction,
        exclude=_string_list(raw.get("exclude"), "exclude", problems), metrics=metrics, strategy=strategy,
        training=training, driver=driver, sampler=_sampler(raw.get("sampler"), driver, problems),
        enqueue=enqueue, trials=trials, seed=_optional(raw, "seed", int, 0, problems), device=device,
        threads=threads, plugins=plugins, heartbeat=_heartbeat(raw.get("heartbeat"), problems),
        constraints=constraint_rules.parse(raw.get("constraints"), problems),
        artifacts=_artifacts(raw.get("artifacts"), out, problems))
    if problems.lines:
        count = len(problems.lines)
        raise UsageError(f"{source}: {count} problem{'s' if count > 1 else ''}:\n  " + "\n  ".join(problems.lines))
    return config
