"""Study settings are declared once: validation, the YAML form and docs/SETTINGS.md follow the
declarations, and each sampler's declared settings are arguments of the class that implements it."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from odimo_moo.study.config import validate
from odimo_moo.study.drivers import DRIVERS, sampler_class
from odimo_moo.study.optuna_driver import make_sampler
from odimo_moo.study.schema import TOP_LEVEL_KEYS, SamplerSpec, StudyConfig
from odimo_moo.study.settings import declared, default_of
from odimo_moo.study.settings_doc import settings_markdown

from test_study_config import BASE, _problems, _with

DOC = Path(__file__).resolve().parents[1] / "docs" / "SETTINGS.md"


def test_settings_doc_is_current():
    assert DOC.read_text() == settings_markdown(), \
        "docs/SETTINGS.md is stale: python -m odimo_moo.study.settings_doc > docs/SETTINGS.md"


def test_yaml_form_has_every_declared_key_in_order():
    assert list(validate(BASE).to_dict()) == list(TOP_LEVEL_KEYS)
    assert "heartbeat.interval" in settings_markdown() and "`pop_size`" in settings_markdown()


def _violations() -> list[tuple[str, str, object]]:
    """For every declared setting with bounds or choices: its key, the key path of the problem, and
    a value that breaks them (a list setting's choices apply to each item)."""
    cases = []
    for field, rule in declared(StudyConfig):
        if rule.choices:
            listed = str(field.type).startswith("tuple")
            cases.append((field.name, f"{field.name}[0]" if listed else field.name,
                          ["no-such-choice"] if listed else "no-such-choice"))
        if rule.minimum is not None:
            cases.append((field.name, field.name, rule.minimum if rule.open_bounds else rule.minimum - 1))
        if rule.maximum is not None:
            cases.append((field.name, field.name, rule.maximum + (0 if rule.open_bounds else 1)))
    return cases


@pytest.mark.parametrize("key, path, value", _violations())
def test_declared_bounds_and_choices_are_enforced(key, path, value):
    lines = [line.strip() for line in _problems(_with({key: value}))]
    assert any(line.startswith(f"{path}: ") and ("must be" in line or "unknown" in line) for line in lines), lines


def test_declared_types_are_enforced():
    for field, rule in declared(StudyConfig):
        if rule.kind in (int, float):
            lines = [line.strip() for line in _problems(_with({field.name: "not-a-number"}))]
            assert f"{field.name}: must be an integer, got 'not-a-number'" in lines or \
                f"{field.name}: must be a number, got 'not-a-number'" in lines, lines


def _constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Every named constructor argument of ``cls`` and its bases (pymoo passes **kwargs up)."""
    parameters: dict[str, inspect.Parameter] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass):
            parameters.update(inspect.signature(klass.__init__).parameters)
    return parameters


@pytest.mark.parametrize("driver, name", [(d, s) for d, driver in DRIVERS.items() for s in driver.samplers])
def test_declared_sampler_settings_are_constructor_arguments(driver, name):
    parameters = _constructor_parameters(sampler_class(driver, name))
    for key, rule in DRIVERS[driver].samplers[name].settings.items():
        assert key in parameters, (driver, name, key)
        annotation = parameters[key].annotation
        if annotation is not inspect.Parameter.empty:  # optuna annotates its arguments; pymoo does not
            assert str(annotation).split(" | ")[0] == rule.kind.__name__, (key, annotation)


@pytest.mark.parametrize("name", list(DRIVERS["optuna"].samplers))
def test_every_optuna_sampler_is_built_by_its_class(name):
    sampler = make_sampler(SamplerSpec(name), seed=0)
    assert type(sampler) is sampler_class("optuna", name)


def test_study_keys_shared_with_setup_have_its_declaration_and_default():
    from odimo_moo.setup_settings import SETUP_SETTINGS
    from odimo_moo.workbench import Setup

    setup_defaults = {f.name: f.default for f in dataclasses.fields(Setup)}
    shared = [(f, rule) for f, rule in declared(StudyConfig) if f.name in SETUP_SETTINGS]
    assert {f.name for f, _ in shared} == set(SETUP_SETTINGS) - {"metric", "progress"}
    for field, rule in shared:
        assert (rule.kind, rule.minimum, rule.maximum, rule.choices) == \
            (SETUP_SETTINGS[field.name].kind, SETUP_SETTINGS[field.name].minimum,
             SETUP_SETTINGS[field.name].maximum, SETUP_SETTINGS[field.name].choices), field.name
        if not rule.required:
            assert default_of(field) == setup_defaults[field.name], field.name


@pytest.mark.parametrize("argv, message", [
    (["--image-size", "x"], "argument --image-size: invalid int value: 'x'"),
    (["--val-fraction", "x"], "argument --val-fraction: invalid float value: 'x'"),
    (["--metric", "area"], "argument --metric: invalid choice: 'area'"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
])
def test_search_options_follow_the_declared_types_and_choices(capsys, argv, message):
    from odimo_moo.cli import main

    with pytest.raises(SystemExit) as info:
        main(["search", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
