"""Validation of a raw study mapping into a :class:`~.schema.StudyConfig`: every problem at once,
one line each with its key path, as one :class:`~odimo_moo.errors.UsageError`. Scalar settings are
checked from their declarations (:mod:`.settings`); the others by their own rules here and in
:mod:`.space_rules` and :mod:`.constraints`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import UsageError
from ..setup_settings import METRIC_NAMES
from . import constraints as constraint_rules
from . import storage_url
from .drivers import DRIVERS
from .problems import Problems, mapping, optional, string_list, typed, unknown_keys
from .registry_names import Names, check_name, registry_names
from .schema import HEARTBEAT_KEYS, REQUIRED_KEYS, TOP_LEVEL_KEYS, Heartbeat, SamplerSpec, StudyConfig, StudyLocation
from .settings import check_bounds, declared, read_scalar
from .space_rules import parse_enqueue, parse_search_space, parse_training

_MISPLACED_TRAINING = ("warmup_epochs", "search_epochs", "finetune_epochs")
_DEFAULT_DRIVER = StudyConfig.__dataclass_fields__["driver"].default


def _scalars(raw: Mapping[str, Any], cls: type, problems: Problems, prefix: str = "") -> dict[str, Any]:
    """Every setting of ``cls`` declared with a scalar kind, read from ``raw`` and checked."""
    return {f.name: read_scalar(raw, f, problems, prefix) for f, rule in declared(cls) if rule.kind is not None}


def _check_registered(values: Mapping[str, Any], names: Names | None, problems: Problems) -> None:
    """SoC, model, strategy and dataset are registered; an image size only for datasets taking one."""
    if names is None:
        return
    check_name(values["soc"], names.socs, "soc", "SoC", problems)
    check_name(values["model"], names.models, "model", "model", problems)
    check_name(values["strategy"], names.strategies, "strategy", "strategy", problems)
    check_name(values["dataset"], names.datasets, "dataset", "dataset", problems)
    dataset = values["dataset"]
    if values["image_size"] is not None and dataset in names.datasets and \
            "image_size" not in names.dataset_options[dataset]:
        problems.add("image_size", f"dataset {dataset} has a fixed input size")


def _metrics(raw: Any, problems: Problems) -> tuple[str, ...]:
    metrics = string_list(raw, "metrics", problems)
    for i, metric in enumerate(metrics):
        if metric not in METRIC_NAMES:
            problems.add(f"metrics[{i}]", f"unknown metric {metric!r}; choose from {', '.join(METRIC_NAMES)}")
    if not metrics or len(set(metrics)) != len(metrics):
        problems.add("metrics", f"must list {' and/or '.join(METRIC_NAMES)} once each, got {list(metrics)}")
    return metrics


def _sampler(raw: Any, driver: str, problems: Problems) -> SamplerSpec:
    known = DRIVERS[driver if driver in DRIVERS else _DEFAULT_DRIVER].samplers
    default = next(iter(known))
    if raw is None:
        return SamplerSpec(default)
    spec = mapping({"name": raw} if isinstance(raw, str) else raw, "sampler", problems)
    unknown_keys(spec, ("name", "settings"), "sampler", problems)
    name = default if spec.get("name") is None else typed(spec["name"], "sampler.name", str, problems)
    if name is None:
        return SamplerSpec(default)
    if name not in known:
        problems.add("sampler.name", f"driver {driver} offers {', '.join(known)}, got {name!r}")
        return SamplerSpec(default)
    rules = known[name].settings
    settings = {}
    for key, value in mapping(spec.get("settings"), "sampler.settings", problems).items():
        path = f"sampler.settings.{key}"
        if key not in rules:
            problems.add(path, f"unknown setting of {name}; known: {', '.join(rules) or 'none'}")
            continue
        value = typed(value, path, rules[key].kind, problems)
        if value is not None:
            check_bounds(value, path, rules[key], problems)
            settings[key] = value
    return SamplerSpec(name, settings)


def _heartbeat(raw: Any, problems: Problems) -> Heartbeat:
    spec = mapping(raw, "heartbeat", problems)
    unknown_keys(spec, HEARTBEAT_KEYS, "heartbeat", problems)
    values = _scalars(spec, Heartbeat, problems, "heartbeat.")
    if values["grace"] <= values["interval"]:
        problems.add("heartbeat.grace", f"must be > heartbeat.interval ({values['interval']} s), "
                                        f"got {values['grace']}")
    return Heartbeat(**values)


def _storage_url(raw: Any, out: Path, problems: Problems) -> str:
    if raw is None:
        return f"sqlite:///{out / 'study.db'}"
    url = typed(raw, "storage", str, problems)
    if url is None:
        return ""
    try:
        return storage_url.normalize(url)
    except ValueError as exc:
        problems.add("storage", str(exc))
        return url


def _artifacts(raw: Any, out: Path, problems: Problems) -> Path | None:
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


def _first_checks(raw: Mapping[str, Any], extra_plugins: Sequence[str],
                  problems: Problems) -> tuple[dict[str, Any], Names | None]:
    """Keys, required keys, scalar settings, plugins and registered names."""
    unknown_keys(raw, TOP_LEVEL_KEYS, "", problems)
    for key in REQUIRED_KEYS:
        if raw.get(key) is None:
            problems.add(key, "is required")
    values = _scalars(raw, StudyConfig, problems)
    _check_study_name(values["name"], problems)
    values["plugins"] = tuple(extra_plugins) + string_list(raw.get("plugins"), "plugins", problems)
    names = registry_names(values["plugins"], values["strategy"], problems)
    _check_registered(values, names, problems)
    for key in ("soc", "model", "dataset"):
        values[key] = values[key] or ""
    return values, names


def _check_study_name(name: str, problems: Problems) -> None:
    if not name.strip() or "/" in name:
        problems.add("name", f"must be a non-empty name without '/', got {name!r}")


def _location(raw: Mapping[str, Any], name: str, problems: Problems) -> tuple[Path, str]:
    """The output folder and the storage URL of study ``name``."""
    out = Path(optional(raw, "out", str, f"runs/{name}", problems)).expanduser().resolve()
    return out, _storage_url(raw.get("storage"), out, problems)


def _raise_problems(problems: Problems, source: str) -> None:
    if problems.lines:
        count = len(problems.lines)
        raise UsageError(f"{source}: {count} problem{'s' if count > 1 else ''}:\n  " + "\n  ".join(problems.lines))


def locate(raw: Mapping[str, Any], source: str = "study") -> StudyLocation:
    """Where a study keeps its results (name, output folder, storage URL), by :func:`validate`'s rules
    for those three settings and nothing else: reading a study's results needs neither its plugins
    nor its training settings (nor torch, which the plugins import). One UsageError if they are wrong."""
    problems = Problems()
    name_field = next(f for f, _ in declared(StudyConfig) if f.name == "name")
    name = read_scalar(raw, name_field, problems)
    _check_study_name(name, problems)
    out, storage = _location(raw, name, problems)
    _raise_problems(problems, source)
    return StudyLocation(name, out, storage)


def _searched(raw: Mapping[str, Any], values: dict[str, Any], names: Names | None, problems: Problems) -> None:
    """Training, search space and enqueued points (into ``values``)."""
    training = parse_training(raw.get("training"), names, problems)
    for key in _MISPLACED_TRAINING:
        if key in raw:
            problems.add(key, f"training parameters go under training: (training.{key})")
    space = parse_search_space(raw.get("search_space"), training, names, problems)
    declared_names = list(raw["search_space"]) if isinstance(raw.get("search_space"), dict) else []
    enqueue = parse_enqueue(raw.get("enqueue"), space, declared_names, names, problems)
    if 1 <= values["trials"] < len(enqueue):
        problems.add("enqueue", f"{len(enqueue)} points but only {values['trials']} trials; raise trials or "
                                f"drop points")
    values.update(training=training, search_space=space, enqueue=enqueue)


def validate(raw: Mapping[str, Any], source: str = "study", *, extra_plugins: Sequence[str] = (),
             earlier_problems: Sequence[str] = ()) -> StudyConfig:
    """A :class:`StudyConfig` from a raw mapping, or one UsageError listing every problem.

    Names of SoC, model, strategy and dataset are checked against the plugins the study loads
    (its ``plugins`` plus ``extra_plugins``); training parameters, ranges and choices against the
    strategy's parameters and :class:`~odimo_moo.recipe.Recipe`'s rules.
    """
    problems = Problems(earlier_problems)
    values, names = _first_checks(raw, extra_plugins, problems)
    values["metrics"] = _metrics(raw.get("metrics", ["latency"]), problems)
    out, storage = _location(raw, values["name"], problems)
    _searched(raw, values, names, problems)
    config = StudyConfig(
        **values, out=out, storage=storage,
        exclude=string_list(raw.get("exclude"), "exclude", problems),
        sampler=_sampler(raw.get("sampler"), values["driver"], problems),
        heartbeat=_heartbeat(raw.get("heartbeat"), problems),
        constraints=constraint_rules.parse(raw.get("constraints"), problems),
        artifacts=_artifacts(raw.get("artifacts"), out, problems))
    _raise_problems(problems, source)
    return config

