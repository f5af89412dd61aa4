"""Where the gradient search's final training starts: the search's weights, the shared warmup, or scratch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odimo_moo.errors import UsageError
from odimo_moo.recipe import Recipe
from odimo_moo.registry import pick
from odimo_moo.workbench import Setup, Workbench

PARAMS = {"warmup_epochs": 1, "search_epochs": 2, "finetune_epochs": 1, "batch_size": 32, "lambda": 3.0}


def _run(tmp_path: Path, **extra) -> tuple:
    bench = Workbench(Setup(data_limit=60, image_size=16, device="cpu", progress=False), cache_dir=tmp_path / "cache")
    strategy = pick(bench.registry.strategies(), "odimo", "strategy")
    outcome = strategy.run(bench, {**PARAMS, **extra}, tmp_path / "run")[0]
    return outcome, [row["phase"] for row in rows(outcome)]


def rows(outcome) -> list[dict]:
    return json.loads(Path(outcome.artifacts["metrics_json"]).read_text())


def test_finetune_from_warmup_trains_the_found_mapping_like_a_fixed_mapping_baseline(tmp_path):
    outcome, phases = _run(tmp_path, finetune_from="warmup")
    # the search, then the found mapping trained from the warmed-up supernet for search + fine-tune epochs
    assert phases == ["warmup", "search", "search", "train", "train", "finetune"]
    assert outcome.train_epochs == 5 and outcome.selected_epoch == 1
    last_search = [row for row in rows(outcome) if row["phase"] == "search"][-1]
    assert outcome.latency_cycles == pytest.approx(last_search["latency_cycles"])  # the mapping it found
    assert outcome.latency_cycles < rows(outcome)[0]["latency_cycles"]  # lambda 3 moved it


def test_finetune_from_search_is_the_papers_protocol(tmp_path):
    outcome, phases = _run(tmp_path)
    assert phases == ["warmup", "search", "search", "finetune"]
    assert outcome.train_epochs == 3


def test_unknown_finetune_start_is_a_usage_error():
    with pytest.raises(UsageError, match="finetune_from must be one of search, warmup, scratch"):
        Recipe(finetune_from="pretrained")
