"""Epoch loops and checkpointed training phases (warmup, search, fine-tune)."""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import atomic_torch_save, load_checkpoint
from .errors import RunFailure, UsageError
from .recipe import Recipe
from .searchable import ODiMO


class Diverged(RunFailure):
    """The loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


#: Device types with torch's fused Adam/SGD kernels (elsewhere the default implementation runs).
FUSED_DEVICES = ("cpu", "cuda")


def make_optimizer(name: str, parameters: Iterable[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``name`` ("adam" or "sgd", momentum 0.9) over the trainable ``parameters``.

    Uses torch's fused kernels where the parameters' device has them: on CPU torch otherwise runs
    one Python-level update per parameter, which for a small network costs several percent of a
    training step (``benchmarks/step_time.py``); the updates are the same up to rounding.
    """
    params = [p for p in parameters if p.requires_grad]
    if name == "sgd":
        optimizer, options = torch.optim.SGD, {"lr": lr, "momentum": 0.9, "weight_decay": weight_decay}
    else:
        optimizer, options = torch.optim.Adam, {"lr": lr, "weight_decay": weight_decay}
    # torch checks fused support only at the first step; CPU and CUDA have the kernels.
    fused = bool(params) and all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params)
    return optimizer(params, fused=True, **options) if fused else optimizer(params, **options)


def weights_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over the network weights (``net_parameters()`` of an ODiMO model, else all)."""
    parameters = model.net_parameters() if isinstance(model, ODiMO) else model.parameters()
    return make_optimizer(recipe.optimizer, parameters, recipe.lr, recipe.weight_decay)


def assignment_optimizer(model: ODiMO, recipe: Recipe) -> torch.optim.Optimizer:
    """Adam at the recipe's ``nas_lr`` over the assignment parameters, without weight decay."""
    return make_optimizer("adam", model.nas_parameters(), recipe.nas_lr, 0.0)


def run_epoch(model: nn.Module, loader: DataLoader, device: torch.device,
              optimizers: Sequence[torch.optim.Optimizer] = (), cost_weight: float = 0.0) -> dict[str, float]:
    """One pass over ``loader``; trains when ``optimizers`` are given. Returns mean loss and accuracy."""
    training = bool(optimizers)
    model.train(training)
    total, correct, loss_sum, cost_sum = 0, 0, 0.0, 0.0
    with torch.set_grad_enabled(training):
        for inputs, targets in loader:
            inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            logits = model(inputs)
            loss = F.cross_entropy(logits, targets)
            if training:
                objective = loss
                if cost_weight > 0 and isinstance(model, ODiMO):
                    cost = model.cost
                    objective = loss + cost_weight * cost.to(loss.dtype)
                    cost_sum += float(cost.detach()) * targets.numel()
                if not math.isfinite(float(objective.detach())):
                    raise Diverged(f"training diverged: loss is {float(objective.detach())}")
                for optimizer in optimizers:
                    optimizer.zero_grad(set_to_none=True)
                objective.backward()
                for optimizer in optimizers:
                    optimizer.step()
            loss_sum += float(loss.detach()) * targets.numel()
            correct += int((logits.detach().argmax(1) == targets).sum())
            total += targets.numel()
    if total == 0:
        raise RunFailure("the data loader produced no samples")
    metrics = {"loss": loss_sum / total, "accuracy": correct / total}
    if training and cost_weight > 0:
        metrics["cost"] = cost_sum / total
    return metrics


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    return run_epoch(model, loader, device)


@dataclass
class PhaseSpec:
    """What one phase trains and how."""

    name: str
    epochs: int
    optimizers: Callable[[], list[torch.optim.Optimizer]]
    cost_weight_at: Callable[[int], float] = lambda epoch: 0.0
    on_epoch_start: Callable[[int], None] = lambda epoch: None


@dataclass
class PhaseRunner:
    """Runs phases with one atomic checkpoint per phase, resuming a phase that was cut short."""

    model: nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    device: torch.device
    checkpoint_dir: Path
    progress: bool = True
    on_epoch_end: Callable[[str, int, dict[str, Any]], None] = lambda phase, epoch, metrics: None
    history: list[dict[str, Any]] = field(default_factory=list)
    # What a checkpoint must have been written with to be resumed (None: anything).
    fingerprint: str | None = None

    def _shuffler(self) -> torch.Generator | None:
        """The generator that shuffles the training data (saved with each checkpoint)."""
        return getattr(self.train_loader, "generator", None)

    def _path(self, phase: str) -> Path:
        return self.checkpoint_dir / f"{phase}.pt"

    def run(self, spec: PhaseSpec) -> list[dict[str, Any]]:
        """Train ``spec.epochs`` epochs (or what is left of them after a resume)."""
        optimizers = spec.optimizers()
        start = 0
        path = self._path(spec.name)
        if path.exists():
            state = load_checkpoint(path)
            stored = state.get("fingerprint")
            if self.fingerprint is not None and stored is not None and stored != self.fingerprint:
                raise UsageError(f"{path} is a checkpoint of a run with other settings (model, data, seed, "
                                 f"lambda or training parameters); re-running resumes only the same command: "
                                 f"choose another output folder, or delete {path.parent} to start over")
            try:
                self.model.load_state_dict(state["model"])
                for optimizer, optimizer_state in zip(optimizers, state["optimizers"]):
                    optimizer.load_state_dict(optimizer_state)
                torch.set_rng_state(state["rng"])
                if state.get("loader_rng") is not None and self._shuffler() is not None:
                    self._shuffler().set_state(state["loader_rng"])  # the next epoch's order, as if never stopped
                start = int(state["epoch"])
                self.history = list(state["history"])
            except (KeyError, RuntimeError, ValueError, TypeError) as exc:  # e.g. another version's layout
                reason = " ".join(str(exc).split())[:300]
                raise RunFailure(f"checkpoint {path} does not fit this run ({type(exc).__name__}: {reason}); "
                                 f"delete it to restart that phase") from exc
        bar = tqdm(range(start, spec.epochs), desc=spec.name, initial=start, total=spec.epochs, leave=False,
                   disable=not self.progress, file=sys.stderr)
        for epoch in bar:
            spec.on_epoch_start(epoch)
            cost_weight = spec.cost_weight_at(epoch)
            try:
                train = run_epoch(self.model, self.train_loader, self.device, optimizers, cost_weight)
            except Diverged as exc:
                kept = f"; {path} keeps epoch {epoch}" if epoch else ""
                raise Diverged(f"{spec.name} epoch {epoch + 1}: {exc}{kept}; try a lower lr or lambda") from exc
            val = evaluate(self.model, self.val_loader, self.device)
            metrics: dict[str, Any] = {"phase": spec.name, "epoch": epoch + 1, "lambda": cost_weight,
                                       "train_loss": train["loss"], "train_accuracy": train["accuracy"],
                                       "val_loss": val["loss"], "val_accuracy": val["accuracy"]}
            if isinstance(self.model, ODiMO):
                report = self.model.cost_report()
                metrics["latency_cycles"] = report["latency_cycles"]
                metrics["energy_uj"] = report["energy_uj"]
            self.history.append(metrics)
            bar.set_postfix(val_acc=f"{val['accuracy']:.3f}")
            atomic_torch_save(path, {"model": self.model.state_dict(),
                                     "optimizers": [o.state_dict() for o in optimizers],
                                     "rng": torch.get_rng_state(), "epoch": epoch + 1,
                                     "loader_rng": None if self._shuffler() is None else self._shuffler().get_state(),
                                     "history": self.history, "fingerprint": self.fingerprint})
            self.on_epoch_end(spec.name, epoch + 1, metrics)
        return self.history
