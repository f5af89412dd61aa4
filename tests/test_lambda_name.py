"""lambda has one name wherever a user or a record sees it (``--lambda``, ``--set``, study keys,
strategy parameters, records), only the strategies that take it accept it, and renaming it kept the
identity of every run written before."""

from __future__ import annotations

import json

import pytest

from odimo_moo.cli import main
from odimo_moo.commands.compare_units import takes_lambda
from odimo_moo.errors import UsageError
from odimo_moo.phases import run_key, warmup_key
from odimo_moo.recipe import Recipe
from odimo_moo.registry import PluginRegistry
from odimo_moo.setup_settings import Setup

from test_reliability_inputs import check_clean_error
from test_search_cli import TINY

#: Run identities (checkpoint fingerprints, which also seed each phase's random streams) computed at
#: 4df3c3b, when the recipe still called lambda ``cost_weight``: checkpoints, warmup caches and
#: compare or study folders written then resume, with the same random streams, after the rename.
IDENTITIES = [
    (Setup(device="cpu"), Recipe(), {}, "642dde2c1d6a6781"),
    (Setup(device="cpu"), Recipe(lambda_=3.0, lambda_ramp=0.25, parametrization="softmax"), {}, "1b50ef1617f3fdb6"),
    (Setup(device="cpu"), Recipe(lambda_=0.5), {"mapping": {"conv1": {"a": 3}}}, "05b017593ebff602"),
    (Setup(soc="darkside", model="mobilenetv1_darkside_tiny", device="cpu", seed=2),
     Recipe(lambda_=10.0, finetune_from="warmup"), {}, "c223e93238b030ce"),
]


@pytest.mark.parametrize("setup, recipe, extra, digest", IDENTITIES)
def test_run_identities_are_those_written_before_the_rename(setup, recipe, extra, digest):
    assert run_key(setup, recipe, **extra) == digest


def test_warmup_identity_is_lambda_and_metric_free():
    # 1a4e2193f22855fe before WARMUP_FORMAT 2 (Darkside's power-of-two steps) invalidated cached warmups,
    # 379c221310554165 before WARMUP_FORMAT 3 (DIANA's power-of-two ternary scales), aa475958318bc0fd
    # before the metric left the key
    assert warmup_key(Setup(device="cpu"), Recipe(lambda_=0.5)) == "6db2a6535d11a096"
    assert warmup_key(Setup(device="cpu"), Recipe(lambda_=7.0)) == "6db2a6535d11a096"
    assert warmup_key(Setup(device="cpu", metric="energy"), Recipe(lambda_=0.5)) == "6db2a6535d11a096"


def test_identity_changes_with_lambda():
    assert run_key(Setup(), Recipe(lambda_=1.0)) != run_key(Setup(), Recipe(lambda_=2.0))


def test_the_recipe_reads_and_records_lambda_only():
    recipe = Recipe.from_params({"lambda": 2, "search_epochs": 4})
    assert recipe.lambda_ == 2.0 and recipe.lambda_at(4) == 2.0
    record = recipe.as_dict()
    assert record["lambda"] == 2.0 and "lambda_" not in record and "cost_weight" not in record
    assert Recipe.from_params(record) == recipe
    assert Recipe.kinds()["lambda"] is float
    for other in ("cost_weight", "lambda_"):
        with pytest.raises(UsageError, match=rf"unknown training parameter\(s\) {other}; known: .*\blambda\b"):
            Recipe.from_params({other: 1.0})


def test_only_the_gradient_search_takes_lambda():
    strategies = PluginRegistry.load(()).strategies()
    assert strategies["odimo"].obj.defaults()["lambda"] == 0.0
    assert takes_lambda(strategies["odimo"].obj)
    for name in ("heuristic", "evolutionary", "random_mapping"):
        assert "lambda" not in strategies[name].obj.defaults(), name
        assert not takes_lambda(strategies[name].obj), name


def test_search_refuses_the_old_name_naming_lambda(tmp_path, capsys):
    check_clean_error(capsys, ["search", *TINY, "--set", "cost_weight=1", "--out", str(tmp_path / "out")], 2,
                      "unknown training parameter(s) cost_weight; known: ")


@pytest.mark.parametrize("strategy, option, message", [
    ("heuristic", ["--lambda", "5"], "--lambda 5: strategy 'heuristic' takes no lambda"),
    ("evolutionary", ["--lambda", "0"], "--lambda 0: strategy 'evolutionary' takes no lambda"),
    ("heuristic", ["--target", "latency_cycles=9000"],
     "--target latency_cycles=9000: strategy 'heuristic' takes no cost_target"),
])
def test_search_refuses_a_cost_option_the_strategy_does_not_take(tmp_path, capsys, strategy, option, message):
    out = tmp_path / "out"
    check_clean_error(capsys, ["search", *TINY, "--strategy", strategy, *option, "--out", str(out)], 2,
                      f"{message} (it has no cost term to steer); leave {option[0]} out")
    assert not out.exists()  # refused before any folder or training


def test_search_without_lambda_runs_a_strategy_that_takes_none(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["search", *TINY, "--strategy", "heuristic", "--set", "mapping=all:digital", "--out", str(out),
                 "--json"]) == 0
    (outcome,) = json.loads(capsys.readouterr().out)
    assert outcome["strategy"] == "heuristic" and outcome["label"] == "all:digital"


def test_compare_refuses_lambda_as_a_parameter(tmp_path, capsys):
    check_clean_error(capsys, ["compare", *TINY, "--set", "odimo.lambda=1", "--out", str(tmp_path / "out")], 2,
                      "give lambdas with --lambdas")



@pytest.mark.parametrize("lambdas, message", [
    ("0,-1", "lambdas '0,-1': recipe: lambda must be >= 0, got -1.0"),
    ("0,nan", "lambdas '0,nan': training parameter lambda='nan' must be a number"),
    ("0,x", "lambdas '0,x': training parameter lambda='x' must be a number"),
])
def test_compare_checks_lambdas_by_the_recipes_rule(tmp_path, capsys, lambdas, message):
    check_clean_error(capsys, ["compare", *TINY, "--lambdas", lambdas, "--out", str(tmp_path / "out")], 2, message)
