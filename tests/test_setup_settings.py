"""The problem instance, ``Setup``, is declared once and without torch: ``--help`` and the study
schema read its fields' declarations (and the recipe's) without importing torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from odimo_moo.errors import UsageError
from odimo_moo.setup_settings import SETUP_SETTINGS, Setup


def test_setup_recipe_and_the_study_schema_import_without_torch():
    script = ("import sys\nimport odimo_moo.setup_settings, odimo_moo.recipe, odimo_moo.study.schema\n"
              "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_workbench_setup_is_the_same_class():
    from odimo_moo import workbench

    assert workbench.Setup is Setup


def test_every_field_is_declared_with_its_rules():
    assert list(SETUP_SETTINGS) == [name for name in Setup.__dataclass_fields__]
    assert SETUP_SETTINGS["metric"].choices == ("latency", "energy")
    assert SETUP_SETTINGS["device"].choices == ("auto", "cpu", "cuda")


@pytest.mark.parametrize("field, value, message", [
    ("metric", "power", "unknown metric 'power'; choose one of latency, energy"),
    ("device", "tpu", "unknown device 'tpu'; choose one of auto, cpu, cuda"),
])
def test_a_value_outside_the_choices_is_a_usage_error(field, value, message):
    with pytest.raises(UsageError, match=message):
        Setup(**{field: value})
