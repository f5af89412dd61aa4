"""The fine-tune of a network whose BatchNorm is folded (training as deployed) runs at a lower rate and
resumes only a fine-tune folded the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odimo_moo import phases
from odimo_moo.errors import UsageError
from odimo_moo.phases import FOLDED_LR_FACTOR
from odimo_moo.registry import pick
from odimo_moo.workbench import Setup, Workbench

PARAMS = {"warmup_epochs": 1, "search_epochs": 1, "finetune_epochs": 1, "batch_size": 32, "lambda": 1.0,
          "lr": 0.002, "lr_schedule": "constant"}


def _finetune_lr(tmp_path: Path, **extra) -> float:
    bench = Workbench(Setup(data_limit=60, image_size=16, device="cpu", progress=False), cache_dir=tmp_path / "cache")
    outcome = pick(bench.registry.strategies(), "odimo", "strategy").run(bench, {**PARAMS, **extra}, tmp_path / "run")[0]
    rows = json.loads(Path(outcome.artifacts["metrics_json"]).read_text())
    search, finetune = ([row["lr"] for row in rows if row["phase"] == phase] for phase in ("search", "finetune"))
    assert search == [pytest.approx(0.002)]
    return finetune[0]


@pytest.mark.parametrize("deploy_format, factor", [(True, FOLDED_LR_FACTOR), (False, 1.0)])
def test_folded_finetune_runs_at_a_fraction_of_the_learning_rate(tmp_path, deploy_format, factor):
    assert _finetune_lr(tmp_path, deploy_format=deploy_format) == pytest.approx(0.002 * factor)


def test_a_folded_finetune_resumes_only_a_finetune_folded_the_same_way(tmp_path, monkeypatch):
    """The fold's version is part of the folded fine-tune's fingerprint: a run folded another way is
    not continued (its checkpoint is refused), one folded the same way is."""
    _finetune_lr(tmp_path)
    assert _finetune_lr(tmp_path) == pytest.approx(0.002 * FOLDED_LR_FACTOR)
    monkeypatch.setattr(phases, "FOLD_VERSION", phases.FOLD_VERSION + 1)
    with pytest.raises(UsageError, match="finetune.pt is a checkpoint of a run with other settings"):
        _finetune_lr(tmp_path)
