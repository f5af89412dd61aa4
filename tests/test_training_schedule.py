"""Training phases: the cosine learning-rate schedule (values, checkpointed state across a kill) and
the fine-tune's best-validation-epoch selection, on a tiny linear model (no ODiMO, milliseconds)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from odimo_moo.errors import UsageError
from odimo_moo.recipe import Recipe
from odimo_moo.training import PhaseRunner, PhaseSpec, lr_factor, make_optimizer


def loaders() -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 4, generator=generator)
    targets = (inputs[:, 0] > 0).long()
    train = DataLoader(TensorDataset(inputs, targets), batch_size=16, shuffle=True,
                       generator=torch.Generator().manual_seed(1))
    val = DataLoader(TensorDataset(inputs[:32], targets[:32]), batch_size=32)
    return train, val


def runner(model: nn.Module, folder: Path) -> PhaseRunner:
    train, val = loaders()
    return PhaseRunner(model, train, val, torch.device("cpu"), folder, progress=False)


def test_cosine_factor_values() -> None:
    assert [lr_factor("cosine", e, 3) for e in range(3)] == pytest.approx([1.0, 0.75, 0.25])
    assert [lr_factor("cosine", e, 4) for e in range(4)] == pytest.approx(
        [1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2])
    assert [lr_factor("constant", e, 3) for e in range(3)] == [1.0, 1.0, 1.0]
    assert lr_factor("cosine", 0, 1) == 1.0  # a one-epoch phase trains at the recipe's lr
    with pytest.raises(UsageError, match="lr_schedule"):
        lr_factor("step", 0, 3)
    assert Recipe().lr_schedule == "cosine"
    with pytest.raises(UsageError, match="lr_schedule must be one of cosine, constant"):
        Recipe.from_params({"lr_schedule": "linear"})


def test_each_epoch_trains_at_the_scheduled_lr_and_records_its_seconds(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    run = runner(model, tmp_path)
    spec = PhaseSpec("finetune", 4, lambda: [make_optimizer("adam", model.parameters(), 0.1, 0.0)],
                     lr_schedule="cosine")
    history = run.run(spec)
    assert [row["lr"] for row in history] == pytest.approx([0.1 * lr_factor("cosine", e, 4) for e in range(4)])
    assert all(row["wall_s"] > 0 and row["cpu_s"] >= 0 for row in history)


class Stop(Exception):
    """Stands for a kill after an epoch's checkpoint."""


def test_schedule_resumes_from_the_checkpoint_as_if_never_stopped(tmp_path: Path) -> None:
    def train(folder: Path, stop_after: int | None) -> tuple[nn.Module, list[dict]]:
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        run = runner(model, folder)

        def on_end(phase: str, epoch: int, metrics: dict) -> None:
            if epoch == stop_after:
                raise Stop

        run.on_epoch_end = on_end
        spec = PhaseSpec("search", 5, lambda: [make_optimizer("sgd", model.parameters(), 0.2, 0.0)],
                         lr_schedule="cosine")
        return model, run.run(spec)

    reference_model, reference = train(tmp_path / "clean", None)
    with pytest.raises(Stop):
        train(tmp_path / "killed", 2)
    resumed_model, resumed = train(tmp_path / "killed", None)  # a fresh optimizer and scheduler
    assert [row["lr"] for row in resumed] == pytest.approx([row["lr"] for row in reference])
    assert [row["val_loss"] for row in resumed] == pytest.approx([row["val_loss"] for row in reference], rel=1e-6)
    for a, b in zip(resumed_model.parameters(), reference_model.parameters()):
        assert torch.allclose(a, b)
    # the same checkpoint with another cosine length is refused, not resumed on a wrong schedule
    model = nn.Linear(4, 2)
    with pytest.raises(UsageError, match="learning-rate schedule"):
        runner(model, tmp_path / "killed").run(PhaseSpec(
            "search", 6, lambda: [make_optimizer("sgd", model.parameters(), 0.2, 0.0)], lr_schedule="cosine"))


def scripted(weights: list[torch.Tensor]) -> tuple[nn.Linear, PhaseSpec]:
    """A phase that trains nothing and sets the model's weights to ``weights[epoch]`` each epoch, so
    its validation accuracy per epoch is chosen by the test."""
    model = nn.Linear(4, 2, bias=False)

    def set_weights(epoch: int) -> None:
        with torch.no_grad():
            model.weight.copy_(weights[epoch])

    return model, PhaseSpec("finetune", len(weights), lambda: [], on_epoch_start=set_weights, keep_best=True)


# The label is 1 when input 0 > 0: RIGHT classifies every validation sample correctly, WRONG none,
# HALF (a constant logit for class 1 on inputs ignored) about half.
RIGHT = torch.tensor([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]])
WRONG = -RIGHT
HALF = torch.tensor([[0.0, 0, 0, 0], [0.0, 0, 0, 0]])


def test_keep_best_ends_on_the_best_validation_epoch(tmp_path: Path) -> None:
    model, spec = scripted([HALF, RIGHT, WRONG, WRONG])
    run = runner(model, tmp_path)
    history = run.run(spec)
    assert [row["val_accuracy"] for row in history][1:] == [1.0, 0.0, 0.0]
    assert run.selected_epochs == {"finetune": 2}
    assert torch.equal(model.weight, RIGHT)
    # resuming the finished phase gives the same selected weights, from the checkpoint alone
    again, spec = scripted([HALF, RIGHT, WRONG, WRONG])
    rerun = runner(again, tmp_path)
    rerun.run(spec)
    assert rerun.selected_epochs == {"finetune": 2} and torch.equal(again.weight, RIGHT)


def test_keep_best_prefers_the_later_of_equal_epochs(tmp_path: Path) -> None:
    model, spec = scripted([RIGHT, WRONG, RIGHT * 2, WRONG])
    run = runner(model, tmp_path)
    run.run(spec)
    assert run.selected_epochs == {"finetune": 3} and torch.equal(model.weight, RIGHT * 2)
