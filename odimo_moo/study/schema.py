"""The study schema: a validated study (:class:`StudyConfig`) and its parts, each setting declared
once with its type, bounds, default and help (:func:`~.settings.setting`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ..front_point import COST_FIELDS
from ..setup_settings import METRIC_NAMES, SETUP_SETTINGS, Setup
from . import constraints as constraint_rules
from .constraints import Constraint
from .drivers import DRIVERS
from .settings import declared, dump, from_rule, keys_of, setting

SETUP = SETUP_SETTINGS  # the study keys of the same names as Setup's fields share their declarations


@dataclass(frozen=True)
class Range:
    """A numeric range of the search space; ``log`` ranges are sampled uniformly in log space."""

    name: str
    low: float
    high: float
    log: bool
    integer: bool

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in the range (ends included)."""
        return self.low <= value <= self.high

    def to_spec(self) -> dict[str, Any]:
        """The range in the study file's form."""
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Choice:
    """A categorical dimension of the search space."""

    name: str
    choices: tuple[Any, ...]

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one of the choices."""
        return value in self.choices

    def to_spec(self) -> dict[str, Any]:
        """The choice in the study file's form."""
        return {"choices": list(self.choices)}


Param = Union[Range, Choice]


@dataclass(frozen=True)
class SamplerSpec:
    """The sampler (Optuna) or algorithm (pymoo) of the outer loop, with its settings."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)

    def to_spec(self) -> dict[str, Any]:
        """The sampler in the study file's form."""
        return {"name": self.name, "settings": dict(self.settings)}


@dataclass(frozen=True)
class Heartbeat:
    """Heartbeat of running trials: a trial silent for ``grace`` seconds is failed and retried
    (at most ``max_retry`` times) in the same work folder, resuming from its checkpoints."""

    interval: int = setting("seconds between two heartbeats of a running trial", default=10, kind=int,
                            minimum=1, note=" second")
    grace: int = setting("seconds of silence after which a trial counts as dead (> interval)", default=30,
                         kind=int)
    max_retry: int = setting("how many times a dead trial is retried", default=3, kind=int, minimum=0)


def space_spec(space: tuple[Param, ...]) -> dict[str, Any]:
    """A search space in the study file's form."""
    return {p.name: p.to_spec() for p in space}


@dataclass(frozen=True)
class StudyLocation:
    """Where a study keeps its results: its name, output folder and storage URL."""

    name: str
    out: Path
    storage: str


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """A validated study. Paths are absolute; ``storage`` is a SQLAlchemy URL or ``journal:///PATH``
    (:mod:`.storage_url`); ``artifacts`` is the folder of the Optuna artifact store (None: off)."""

    name: str = setting("study name, no '/'", default="study", kind=str, default_doc="the file's stem")
    soc: str = from_rule(SETUP["soc"], required=True)
    model: str = from_rule(SETUP["model"], required=True)
    dataset: str = from_rule(SETUP["dataset"], required=True)
    data_root: str | None = from_rule(SETUP["data_root"], default=None)
    data_limit: int | None = from_rule(SETUP["data_limit"], default=None)
    image_size: int | None = from_rule(SETUP["image_size"], default=None)
    download: bool = from_rule(SETUP["download"], default=False)
    val_fraction: float = from_rule(SETUP["val_fraction"], default=0.1)
    exclude: tuple[str, ...] = from_rule(SETUP["exclude"], default=())
    metrics: tuple[str, ...] = setting("cost metrics to minimise; the first is the cost in the loss",
                                       default=("latency",), choices=METRIC_NAMES, identity=True)
    strategy: str = setting("registered strategy", default="odimo", kind=str, identity=True)
    training: dict[str, Any] = setting("fixed training parameters (Recipe fields, the strategy's parameters)",
                                       default_factory=dict, identity=True)
    search_space: tuple[Param, ...] = setting(
        "parameters the outer loop searches: [low, high], {low, high, log} or {choices: [...]}",
        required=True, identity=True, dump=space_spec)
    driver: str = setting("outer loop", default="optuna", kind=str, choices=tuple(DRIVERS))
    sampler: SamplerSpec = setting("sampler name, or {name, settings}: Samplers below",
                                   default_factory=lambda: SamplerSpec("tpe"), dump=SamplerSpec.to_spec,
                                   default_doc="the driver's first sampler")
    enqueue: tuple[dict[str, Any], ...] = setting("points of the search space tried first", default=())
    trials: int = setting("trial budget", default=10, kind=int, minimum=1)
    storage: str = setting("Optuna storage: SQLAlchemy URL or journal file",
                           default_doc="sqlite:///<out>/study.db")
    out: Path = setting("output folder", default_doc="runs/<name>")
    seed: int = from_rule(SETUP["seed"], default=0, help="seed of data splits, initialisation, search and sampler")
    device: str = from_rule(SETUP["device"], default="auto")
    threads: int | None = setting("PyTorch CPU threads (null: PyTorch's default)", default=None, kind=int,
                                  minimum=1, note=" (or null for PyTorch's default)")
    plugins: tuple[str, ...] = from_rule(SETUP["plugins"], default=())
    heartbeat: Heartbeat = setting("trial heartbeat: heartbeat.* below", default_factory=Heartbeat,
                                   dump=dataclasses.asdict, default_doc="heartbeat.* below")
    constraints: tuple[Constraint, ...] = setting("bounds on latency_cycles, energy_uj or val_accuracy, "
                                                  "e.g. {latency_cycles: {max: 20000}}", default=(),
                                                  identity=True, identity_when_empty=False,
                                                  dump=constraint_rules.to_spec)
    artifacts: Path | None = setting("artifact store folder, or false for none", default=None,
                                     dump=lambda path: str(path) if path is not None else False,
                                     default_doc="<out>/artifacts")

    def objective_names(self) -> list[str]:
        """Names of the study's objectives, in Optuna's order: validation accuracy, then the costs."""
        return ["val_accuracy"] + [COST_FIELDS[m] for m in self.metrics]

    def setup(self, progress: bool = True) -> Setup:
        """The :class:`~odimo_moo.setup_settings.Setup` every trial of the study shares: the study's
        fields of the same names; the first metric is the cost in ODiMO's loss."""
        own = {f.name for f in dataclasses.fields(self)}
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(Setup) if f.name in own}
        return Setup(**shared, metric=self.metrics[0], progress=progress)

    def identity(self) -> dict[str, Any]:
        """What defines the optimisation problem: trials of one study must agree on all of it (the
        problem instance as :meth:`Setup.identity` defines it, data_root included; the settings
        declared ``identity``; constraints only when there are any: each trial stores their values)."""
        identity = dict(self.setup().identity())  # the trials' checkpoints are keyed by the same fields
        for f, rule in declared(StudyConfig):
            if rule.identity and (rule.identity_when_empty or getattr(self, f.name)):
                identity[f.name] = dump(self, f)
        return json.loads(json.dumps(identity, sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """The study in the YAML schema (loading it back gives an equal config)."""
        return {f.name: dump(self, f) for f, _ in declared(StudyConfig)}


#: Every key a study file may hold, and those it must hold.
TOP_LEVEL_KEYS = keys_of(StudyConfig)
REQUIRED_KEYS = tuple(f.name for f, rule in declared(StudyConfig) if rule.required)
HEARTBEAT_KEYS = keys_of(Heartbeat)
