"""Baseline strategies on a tiny setup (resnet8 on digits, DIANA; 1 epoch per phase): heuristic
mappings, evolutionary (NSGA-II) and random mapping search on the one-shot supernet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from odimo_moo.errors import UsageError
from odimo_moo.genome import random_genomes
from odimo_moo.layer_splits import min_latency_split
from odimo_moo.oneshot import OneShotSearch, SearchBudget, spread_along_front
from odimo_moo.pareto import Scored
from odimo_moo.nsga2_mapping import evolve
from odimo_moo.plugins.heuristic import catalogue
from odimo_moo.phases import warmup
from odimo_moo.recipe import Recipe
from odimo_moo.registry import pick
from odimo_moo.workbench import Setup, Workbench

TINY = {"warmup_epochs": 1, "search_epochs": 1, "finetune_epochs": 1, "batch_size": 32}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Workbench:
    setup = Setup(soc="diana", model="resnet8", dataset="digits", data_limit=100, device="cpu", progress=False)
    return Workbench(setup, cache_dir=tmp_path_factory.mktemp("warmup"))


def strategy(bench: Workbench, name: str):
    return pick(bench.registry.strategies(), name, "strategy")


def test_baselines_are_registered_plugins(bench):
    strategies = bench.registry.strategies()
    assert {"heuristic", "evolutionary", "random_mapping"} <= set(strategies)
    assert strategies["evolutionary"].plugin == "evolutionary"
    assert "lambda" not in strategies["heuristic"].obj.defaults()  # no lambda: one run, not one per lambda


def test_heuristics_fine_tune_their_mappings(bench, tmp_path):
    outcomes = strategy(bench, "heuristic").run(bench, {**TINY, "mapping": "all:analog, first_last_digital"}, tmp_path)
    by_label = {o.label: o for o in outcomes}
    assert list(by_label) == ["all:analog", "first_last_digital"]
    model = bench.supernet(Recipe())
    names = model.split_names
    assert all(split == {"digital": 0, "analog": model.split_layer(name).channels}
               for name, split in by_label["all:analog"].channel_split.items())
    paper = by_label["first_last_digital"].channel_split
    assert [paper[n]["digital"] == model.split_layer(n).channels for n in names] == (
        [True] + [False] * (len(names) - 2) + [True])
    assert all(paper[n]["analog"] == model.split_layer(n).channels for n in names[1:-1])
    for outcome in outcomes:
        assert outcome.strategy == "heuristic" and outcome.trainings == 1 and outcome.params["mapping"] == outcome.label
        assert outcome.train_epochs == TINY["search_epochs"] + TINY["finetune_epochs"] and outcome.selected_epoch == 1
        assert 0.0 <= outcome.accuracy <= 1.0 and outcome.latency_cycles > 0 and outcome.energy_uj > 0
        model.force_counts({n: list(split.values()) for n, split in outcome.channel_split.items()})
        assert outcome.latency_cycles == pytest.approx(model.cost_report()["latency_cycles"])
    saved = json.loads((tmp_path / "all-analog" / "result.json").read_text())
    assert saved["label"] == "all:analog" and saved["channel_split"] == by_label["all:analog"].channel_split


def test_per_layer_heuristics_without_training(bench):
    """min_latency is the fastest mapping of the catalogue and splits each layer like min_latency_split;
    balanced keeps every layer's counts valid."""
    model = bench.supernet(Recipe())
    known = catalogue(bench, model)
    latency = {}
    for name, counts_of in known.items():
        model.force_counts(counts_of())
        latency[name] = model.cost_report()["latency_cycles"]
    assert latency["min_latency"] == min(latency.values())
    minimal, balanced = known["min_latency"](), known["balanced"]()
    for name, layer in model.split_layers():
        assert tuple(minimal[name]) == min_latency_split(model.soc, layer.spec, layer.unit_indices.tolist())
        assert sum(balanced[name]) == layer.channels and min(balanced[name]) >= 0


def test_heuristic_catalogue_follows_the_soc(bench):
    model = bench.supernet(Recipe())
    known = catalogue(bench, model)
    assert list(known) == ["all:digital", "all:analog", "first_last_digital", "min_latency", "balanced"]
    with pytest.raises(UsageError, match="standard_mobilenetv1.*choose 'all' or among: all:digital"):
        strategy(bench, "heuristic").run(bench, {"mapping": "standard_mobilenetv1"}, Path("unused"))


def test_darkside_catalogue_has_the_paper_baselines(socs, tmp_path):
    """Darkside's baselines are all-cluster and all-DWE (standard MobileNetV1 with its depthwise on the DWE
    is the all:dwe mapping of this search space, no separate manual mapping), plus the per-layer splits."""
    from odimo_moo.registry import PluginRegistry

    darkside = Workbench(Setup(soc="darkside", model="mobilenetv1_darkside", dataset="digits", image_size=32,
                               data_limit=50, device="cpu", progress=False), cache_dir=tmp_path)
    model = darkside.supernet(Recipe())
    assert list(catalogue(darkside, model)) == ["all:cluster", "all:dwe", "min_latency", "balanced"]
    assert not any(entry.obj.soc == "darkside" for entry in PluginRegistry.load().heuristics().values())
    assert len(model.split_names) == 8


def test_evolutionary_search_is_budgeted_and_fine_tunes_front_points(bench, tmp_path):
    params = {**TINY, "evaluations": 12, "population": 6, "finetune_top": 2}
    outcomes = strategy(bench, "evolutionary").run(bench, params, tmp_path)
    search = json.loads((tmp_path / "search.json").read_text())
    assert search["proposed"] == 12 and 1 <= search["evaluated"] <= 12 == search["budget"]["evaluations"]
    front = [p["counts"] for p in search["points"] if p["front"]]
    assert 1 <= len(outcomes) <= 2 and search["finetuned"]
    # the front's points first; the next front's only where the front has fewer (choose_points)
    on_front = [c for c in search["finetuned"] if c in front]
    assert len(on_front) == min(len(front), len(search["finetuned"]))
    for outcome, counts in zip(outcomes, search["finetuned"]):
        assert outcome.strategy == "evolutionary" and outcome.trainings == 1
        assert outcome.params["one_shot_proposed"] == 12 and outcome.params["evaluations"] == 12
        assert {n: list(split.values()) for n, split in outcome.channel_split.items()} == counts
        assert outcome.wall_time_s > 0
        assert (Path(outcome.artifacts["mapping"])).is_file()


def test_evolutionary_search_is_seeded(bench):
    model, _ = warmup(bench, Recipe(**TINY))
    archives = []
    for _ in range(2):
        search = OneShotSearch(bench, model, SearchBudget(evaluations=10, max_seconds=0, finetune_top=1))
        evolve(search, population=4, seed=bench.setup.seed)
        assert search.proposed == 10
        archives.append(search.archive)
    assert archives[0] == archives[1]


def test_random_mapping_fine_tunes_a_non_dominated_mapping(bench, tmp_path):
    outcomes = strategy(bench, "random_mapping").run(bench, {**TINY, "evaluations": 12, "finetune_top": 1}, tmp_path)
    search = json.loads((tmp_path / "search.json").read_text())
    assert search["proposed"] == 12 and len(outcomes) == 1
    chosen = {n: list(split.values()) for n, split in outcomes[0].channel_split.items()}
    point = next(p for p in search["points"] if p["counts"] == chosen)
    assert point["front"]
    assert not any(p["val_accuracy"] >= point["val_accuracy"] and p["latency_cycles"] < point["latency_cycles"]
                   for p in search["points"])


def test_time_budget_stops_the_search_after_one_candidate(bench):
    model, _ = warmup(bench, Recipe(**TINY))
    search = OneShotSearch(bench, model, SearchBudget(evaluations=50, max_seconds=1e-9, finetune_top=1))
    scored = search.score(random_genomes(search.layout, 5, torch.Generator().manual_seed(0)))
    assert len(scored) == 1 and search.proposed == 1 and search.exhausted


def test_search_budget_rejects_bad_settings():
    for bad in ({"evaluations": 0}, {"max_seconds": -1}, {"finetune_top": 0}, {"evaluations": "many"}):
        with pytest.raises(UsageError):
            SearchBudget.pop_from({"evaluations": 5, "max_seconds": 0, "finetune_top": 1, **bad})


def test_spread_along_front_keeps_both_ends():
    points = [Scored((i,), acc, cost) for i, (acc, cost) in
              enumerate([(0.5, 1.0), (0.6, 2.0), (0.61, 2.1), (0.62, 2.2), (0.9, 10.0)])]
    assert [p.cost for p in spread_along_front(points, 2)] == [1.0, 10.0]
    assert [p.cost for p in spread_along_front(points, 3)] == [1.0, 2.2, 10.0]
    assert spread_along_front(points, 9) == points
