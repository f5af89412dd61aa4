"""Setup values given to a command (a preset, ``--set``) and training parameters (the recipe) are read
by the same rules as a study file's."""

from __future__ import annotations

import argparse

import pytest

from odimo_moo.commands.common import add_setup_options, build_setup
from odimo_moo.errors import UsageError
from odimo_moo.recipe import Recipe
from odimo_moo.study.problems import Problems, typed


def _no_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_setup_options(parser)
    return parser.parse_args([])


def test_values_are_converted_as_in_a_study_file():
    setup = build_setup(_no_options(), overrides={"data_limit": 3.0, "val_fraction": "0.25", "seed": 7,
                                                  "image_size": None, "exclude": "fc"})
    assert setup.data_limit == 3 and isinstance(setup.data_limit, int)
    assert setup.val_fraction == 0.25 and setup.seed == 7 and setup.image_size is None
    assert setup.exclude == ("fc",)
    problems = Problems()
    assert typed(3.0, "data_limit", int, problems) == 3 and typed("0.25", "val_fraction", float, problems) == 0.25
    assert not problems.lines


@pytest.mark.parametrize("key, value, message", [
    ("data_limit", 2.5, "setup option data_limit=2.5 must be an integer or null"),
    ("seed", True, "setup option seed=True must be an integer$"),
    ("seed", None, "setup option seed=None must be an integer$"),
    ("val_fraction", "many", "setup option val_fraction='many' must be a number$"),
    ("val_fraction", float("nan"), "setup option val_fraction=nan must be a number$"),
    ("download", "yes", "setup option download='yes' must be true or false$"),
    ("soc", 3, "setup option soc=3 must be a string$"),
    ("exclude", 3, "setup option exclude=3 must be a list of names"),
])
def test_a_value_of_the_wrong_kind_is_a_usage_error_naming_it(key, value, message):
    with pytest.raises(UsageError, match=message):
        build_setup(_no_options(), overrides={key: value})


@pytest.mark.parametrize("key, value", [
    ("quantize", "yes"), ("quantize", 1), ("search_epochs", 2.5), ("search_epochs", True), ("lr", "fast"),
    ("lr", None), ("optimizer", 3),
])
def test_the_recipe_refuses_what_a_study_file_refuses(key, value):
    problems = Problems()
    assert typed(value, key, Recipe.kinds()[key], problems) is None and problems.lines
    with pytest.raises(UsageError, match=f"training parameter {key}={value!r} must be "):
        Recipe.from_params({key: value})


def test_the_recipe_converts_what_a_study_file_converts():
    recipe = Recipe.from_params({"search_epochs": 4.0, "lr": "1e-3", "gumbel": True, "quantize": "False",
                                 "optimizer": "sgd"})
    assert recipe.search_epochs == 4 and isinstance(recipe.search_epochs, int)
    assert (recipe.lr, recipe.gumbel, recipe.quantize, recipe.optimizer) == (1e-3, True, False, "sgd")
    assert build_setup(_no_options(), overrides={"download": "true"}).download is True
