"""Searching to a cost target: the Lagrange multiplier's update and a search that uses it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from odimo_moo.cost_target import CostTarget
from odimo_moo.errors import UsageError
from odimo_moo.recipe import Recipe
from odimo_moo.registry import pick
from odimo_moo.workbench import Setup, Workbench


def test_multiplier_grows_above_the_target_and_shrinks_below():
    target = CostTarget(0.5, weight=2.0, rate=0.1)
    target.observe(math.log(0.5 * math.e ** 0.3))  # 0.3 above in log: lambda * exp(0.1 * 0.3)
    assert target.weight == pytest.approx(2.0 * math.exp(0.03))
    target.observe(math.log(0.5) - 5.0)  # far below: the excess is clipped to -1
    assert target.weight == pytest.approx(2.0 * math.exp(0.03) * math.exp(-0.1))


def test_multiplier_settles_where_the_cost_meets_the_target():
    """A stand-in for the search: the relative cost falls as lambda grows, ln(cost) = -lambda / 4."""
    target = CostTarget(0.3, weight=0.01)
    for _ in range(2000):
        target.observe(-target.weight / 4)
    assert math.exp(-target.weight / 4) == pytest.approx(0.3, rel=0.02)


def test_bad_targets_are_usage_errors():
    with pytest.raises(UsageError, match="positive"):
        CostTarget(0.0)
    with pytest.raises(UsageError, match="cost_target must be >= 0"):
        Recipe(cost_target=-1.0)


def test_search_to_a_target_adapts_lambda_and_checkpoints_it(tmp_path):
    bench = Workbench(Setup(data_limit=120, image_size=16, device="cpu", progress=False), cache_dir=tmp_path / "c")
    strategy = pick(bench.registry.strategies(), "odimo", "strategy")
    reference = bench.supernet(Recipe()).reference_cost()
    params = {"warmup_epochs": 1, "search_epochs": 2, "finetune_epochs": 1, "batch_size": 16,
              "cost_target": 0.7 * reference}
    outcome = strategy.run(bench, params, tmp_path / "run")[0]
    rows = json.loads(Path(outcome.artifacts["metrics_json"]).read_text())
    lambdas = [row["lambda"] for row in rows if row["phase"] == "search"]
    assert len(lambdas) == 2 and lambdas[0] != 1.0 and lambdas[0] != lambdas[1]  # adapted step by step
    landing = json.loads((tmp_path / "run" / "target_landing.json").read_text())
    assert outcome.latency_cycles == pytest.approx(landing["landed_cost"])
    assert landing["landed_cost"] <= 0.7 * reference
    state = torch.load(tmp_path / "run" / "checkpoints" / "search.pt", weights_only=False)
    assert state["cost_target"]["weight"] == pytest.approx(lambdas[-1])


@pytest.mark.parametrize("argv, message", [
    (["--target", "cycles=5"], "expected COST=VALUE with COST one of latency_cycles, energy_uj"),
    (["--target", "energy_uj=5"], "--target energy_uj needs --metric energy"),
    (["--target", "latency_cycles=-3"], "the value must be a positive number"),
    (["--target", "latency_cycles=nan"], "the value must be a positive number"),
])
def test_search_target_usage_errors(tmp_path, capsys, argv, message):
    from odimo_moo.cli import main

    assert main(["search", "--data-limit", "40", "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_search_command_takes_a_target(tmp_path, capsys):
    from odimo_moo.cli import main

    out = tmp_path / "run"
    assert main(["search", "--data-limit", "60", "--image-size", "16", "--no-progress", "--out", str(out),
                 "--target", "latency_cycles=25000", "--set", "warmup_epochs=1", "--set", "search_epochs=1",
                 "--set", "finetune_epochs=1", "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)[0]
    assert outcome["params"]["cost_target"] == 25000.0
