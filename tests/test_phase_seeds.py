"""A phase's random streams come from its identity, not from the process's history: a deleted or
damaged warmup cache is rebuilt to the identical network."""

from __future__ import annotations

import torch

from odimo_moo.phases import warmup
from odimo_moo.recipe import Recipe
from odimo_moo.workbench import Setup, Workbench


def _warm_state(tmp_path, name: str, draws_before: int) -> dict[str, torch.Tensor]:
    bench = Workbench(Setup(data_limit=80, device="cpu", progress=False), cache_dir=tmp_path / name)
    recipe = Recipe(warmup_epochs=2, batch_size=16)
    train, _, _ = bench.loaders(recipe.batch_size)
    for _ in range(draws_before):  # another trial used the process's generators before this warmup
        next(iter(train))
        torch.rand(7)
    model, _ = warmup(bench, recipe)
    return model.state_dict()


def test_rebuilt_warmup_is_identical_whatever_ran_before(tmp_path):
    first = _warm_state(tmp_path, "cache-a", draws_before=0)
    rebuilt = _warm_state(tmp_path, "cache-b", draws_before=3)
    assert first.keys() == rebuilt.keys()
    for key in first:
        torch.testing.assert_close(first[key], rebuilt[key], rtol=0, atol=0, msg=key)
