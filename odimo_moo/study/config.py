"""Study configuration, the entry point of ``odimo run``: read a study file (a path or a packaged
study), apply ``--set`` overrides and validate it into a :class:`StudyConfig`.

A study file names the problem (SoC, model, data, cost metrics), the strategy and its fixed training
parameters, the outer loop's search space (lambda and hyperparameters), the driver and its sampler,
known-good points to try first, the trial budget and where everything is stored. Its schema is
:mod:`.schema` (every setting declared once, see docs/SETTINGS.md); validation (:mod:`.validation`)
reports every problem at once, one line each with its key path, as a
:class:`~odimo_moo.errors.UsageError`.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import UsageError
from ..yaml_loader import InvalidYaml, parse_yaml
from .schema import Choice, Heartbeat, Param, Range, SamplerSpec, StudyConfig, StudyLocation
from .validation import locate, validate

__all__ = ["Choice", "Heartbeat", "Param", "Range", "SamplerSpec", "StudyConfig", "StudyLocation", "apply_overrides",
           "load_study", "packaged_studies", "read_study_file", "study_location", "validate"]

PACKAGED_STUDIES = "odimo_moo.studies"


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


def study_location(ref: str | None) -> StudyLocation:
    """Where the study of a study file keeps its results (see :func:`~.validation.locate`): read without
    loading its plugins, for commands that only read results (``odimo report``)."""
    raw, source = read_study_file(ref)
    return locate(raw, source)


def load_study(ref: str | None, overrides: Mapping[str, Any] | None = None, *,
               plugins: Sequence[str] = ()) -> StudyConfig:
    """Read, override and validate a study (see :func:`validate`)."""
    raw, source = read_study_file(ref)
    raw, problems = apply_overrides(raw, overrides or {})
    return validate(raw, source, extra_plugins=plugins, earlier_problems=problems)
