"""Epoch loops and checkpointed training phases (warmup, search, fine-tune)."""

from __future__ import annotations

import hashlib
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .batchnorm import precise_batchnorm
from .checkpoint import atomic_torch_save, load_checkpoint
from .cost_target import CostTarget
from .errors import RunFailure, UsageError
from .recipe import LR_SCHEDULES, Recipe
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


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier of epoch ``epoch`` (0-based) of a phase of ``epochs`` epochs.

    ``cosine``: ``(1 + cos(pi * epoch / epochs)) / 2``, from 1 at the first epoch down towards 0 (3
    epochs: 1, 0.75, 0.25); ``constant``: 1.
    """
    if schedule not in LR_SCHEDULES:
        raise UsageError(f"unknown lr_schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    if schedule == "constant" or epochs <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def run_epoch(model: nn.Module, loader: DataLoader, device: torch.device,
              optimizers: Sequence[torch.optim.Optimizer] = (), lambda_: float = 0.0,
              target: CostTarget | None = None) -> dict[str, float]:
    """One pass over ``loader``; trains when ``optimizers`` are given. Returns mean loss and accuracy.

    With a ``target``, every step's lambda is the target's multiplier (``lambda_`` is ignored),
    updated after the step from the step's cost.
    """
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
                weight = lambda_ if target is None else target.weight
                if (weight > 0 or target is not None) and isinstance(model, ODiMO):
                    cost = model.cost
                    objective = loss + weight * cost.to(loss.dtype)
                    cost_value = float(cost.detach())
                    cost_sum += cost_value * targets.numel()
                    if target is not None:
                        target.observe(cost_value)
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
    if training and (lambda_ > 0 or target is not None):
        metrics["cost"] = cost_sum / total
    return metrics


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    return run_epoch(model, loader, device)


@dataclass
class PhaseSpec:
    """What one phase trains and how.

    ``lr_schedule`` (see :func:`lr_factor`) drives the learning rate of the first optimizer (the
    weights'); the others keep theirs. With ``keep_best`` the phase ends on the weights of its epoch
    with the highest validation accuracy (the latest of equals), not on those of its last epoch.
    With a ``cost_target`` lambda follows the target's multiplier step by step instead of
    ``lambda_at`` (its state is checkpointed with the phase).
    """

    name: str
    epochs: int
    optimizers: Callable[[], list[torch.optim.Optimizer]]
    lambda_at: Callable[[int], float] = lambda epoch: 0.0
    on_epoch_start: Callable[[int], None] = lambda epoch: None
    lr_schedule: str = "constant"
    keep_best: bool = False
    cost_target: CostTarget | None = None


@dataclass
class PhaseRunner:
    """Runs phases with one atomic checkpoint per phase, resuming a phase that was cut short.

    A checkpoint holds the model, the optimizers, the learning-rate scheduler, the random states, the
    history and (``keep_best`` phases) the best epoch's weights, so a resumed phase continues as if
    never stopped. Every history row records the epoch's learning rate and its wall and CPU seconds
    (``wall_s``, ``cpu_s``: training and validation), so the compute of a killed and resumed run
    counts each epoch once.
    """

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
    #: Per ``keep_best`` phase, the epoch (1-based) whose weights the phase ended on.
    selected_epochs: dict[str, int] = field(default_factory=dict)
    #: Training batches on which BatchNorm statistics are re-estimated before each validation
    #: (:func:`odimo_moo.batchnorm.precise_batchnorm`; empty: the running averages as they are).
    calibration: Sequence[torch.Tensor] = ()

    def _shuffler(self) -> torch.Generator | None:
        """The generator that shuffles the training data (saved with each checkpoint)."""
        return getattr(self.train_loader, "generator", None)

    def _path(self, phase: str) -> Path:
        return self.checkpoint_dir / f"{phase}.pt"

    def _seed_phase(self, spec: PhaseSpec) -> None:
        """Seed the phase's random streams (shuffling, augmentation, sampled splits) from what it is, not
        from what the process did before: a deleted cache is rebuilt identically."""
        if self.fingerprint is None:
            return
        phase_seed = int(hashlib.sha256(f"{self.fingerprint}/{spec.name}".encode()).hexdigest()[:15], 16)
        seed_everything(phase_seed)
        if self._shuffler() is not None:
            self._shuffler().manual_seed(phase_seed)

    def _check_resumable(self, path: Path, state: dict[str, Any], spec: PhaseSpec) -> None:
        """Refuse a checkpoint that another run wrote, or one of another learning-rate schedule."""
        stored = state.get("fingerprint")
        if self.fingerprint is not None and stored is not None and stored != self.fingerprint:
            raise UsageError(f"{path} is a checkpoint of a run with other settings (model, data, seed, "
                             f"lambda or training parameters); re-running resumes only the same command: "
                             f"choose another output folder, or delete {path.parent} to start over")
        schedule = {"name": spec.lr_schedule, "epochs": spec.epochs}
        stored_schedule = state.get("lr_schedule")
        if spec.lr_schedule != "constant" and stored_schedule not in (None, schedule):
            raise UsageError(f"{path} was trained with the learning-rate schedule {stored_schedule}, this run "
                             f"asks for {schedule}; keep the phase's epochs, or delete {path} to restart it")

    def _resume(self, path: Path, spec: PhaseSpec, optimizers: list[torch.optim.Optimizer],
                scheduler: Any) -> tuple[int, dict[str, Any] | None]:
        """Load the phase's checkpoint into the model, optimizers, scheduler and random streams; returns
        the number of epochs it holds and its best epoch (``keep_best``)."""
        state = load_checkpoint(path)
        self._check_resumable(path, state, spec)
        try:
            self.model.load_state_dict(state["model"])
            for optimizer, optimizer_state in zip(optimizers, state["optimizers"]):
                optimizer.load_state_dict(optimizer_state)
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            if state.get("loader_rng") is not None and self._shuffler() is not None:
                self._shuffler().set_state(state["loader_rng"])  # the next epoch's order, as if never stopped
            self.history = list(state["history"])
            if spec.cost_target is not None and state.get("cost_target") is not None:
                spec.cost_target.load_state_dict(state["cost_target"])
            done = int(state["epoch"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:  # e.g. another version's layout
            reason = " ".join(str(exc).split())[:300]
            raise RunFailure(f"checkpoint {path} does not fit this run ({type(exc).__name__}: {reason}); "
                             f"delete it to restart that phase") from exc
        if done > spec.epochs:  # a longer phase's weights and result are not this run's: never cut one short
            raise UsageError(f"{path} holds {done} finished epochs of phase {spec.name}, this run asks for "
                             f"{spec.epochs}: a shorter phase is not cut from a longer one; ask for at least "
                             f"{done} epochs, choose another output folder, or delete {path} to restart the phase")
        return done, state.get("best")

    def _save(self, path: Path, spec: PhaseSpec, optimizers: list[torch.optim.Optimizer], scheduler: Any,
              best: dict[str, Any] | None, epochs: int) -> None:
        """Write the phase's checkpoint after ``epochs`` epochs: everything :meth:`_resume` reads."""
        shuffler = self._shuffler()
        atomic_torch_save(path, {"model": self.model.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
                                 "scheduler": None if scheduler is None else scheduler.state_dict(),
                                 "lr_schedule": {"name": spec.lr_schedule, "epochs": spec.epochs}, "best": best,
                                 "cost_target": spec.cost_target and spec.cost_target.state_dict(),
                                 "rng": torch.get_rng_state(), "epoch": epochs,
                                 "loader_rng": None if shuffler is None else shuffler.get_state(),
                                 "history": self.history, "fingerprint": self.fingerprint})

    def run(self, spec: PhaseSpec) -> list[dict[str, Any]]:
        """Train ``spec.epochs`` epochs (or what is left of them after a resume)."""
        optimizers = spec.optimizers()
        scheduler = None
        if optimizers:
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizers[0], lambda epoch: lr_factor(spec.lr_schedule, epoch, spec.epochs))
        path = self._path(spec.name)
        self._seed_phase(spec)
        start, best = self._resume(path, spec, optimizers, scheduler) if path.exists() else (0, None)
        bar = tqdm(range(start, spec.epochs), desc=spec.name, initial=start, total=spec.epochs, leave=False,
                   disable=not self.progress, file=sys.stderr)
        for epoch in bar:
            wall, cpu = time.perf_counter(), time.process_time()
            metrics = self._epoch(spec, epoch, optimizers, path)
            if scheduler is not None:
                scheduler.step()
            metrics["wall_s"] = time.perf_counter() - wall
            metrics["cpu_s"] = time.process_time() - cpu
            self.history.append(metrics)
            if spec.keep_best and (best is None or metrics["val_accuracy"] >= best["val_accuracy"]):
                best = {"epoch": epoch + 1, "val_accuracy": metrics["val_accuracy"],
                        "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}
            bar.set_postfix(val_acc=f"{metrics['val_accuracy']:.3f}")
            self._save(path, spec, optimizers, scheduler, best, epoch + 1)
            self.on_epoch_end(spec.name, epoch + 1, metrics)
        if spec.keep_best and best is not None:
            self.model.load_state_dict(best["model"])
            self.selected_epochs[spec.name] = int(best["epoch"])
        return self.history

    def _epoch(self, spec: PhaseSpec, epoch: int, optimizers: list[torch.optim.Optimizer],
               path: Path) -> dict[str, Any]:
        """One epoch: train, re-estimate BatchNorm statistics, validate; the history row (no times)."""
        spec.on_epoch_start(epoch)
        lambda_ = spec.lambda_at(epoch)
        lr = optimizers[0].param_groups[0]["lr"] if optimizers else 0.0
        try:
            train = run_epoch(self.model, self.train_loader, self.device, optimizers, lambda_, spec.cost_target)
        except Diverged as exc:
            kept = f"; {path} keeps epoch {epoch}" if epoch else ""
            raise Diverged(f"{spec.name} epoch {epoch + 1}: {exc}{kept}; try a lower lr or lambda") from exc
        if spec.cost_target is not None:
            lambda_ = spec.cost_target.weight
        precise_batchnorm(self.model, self.calibration, self.device)
        val = evaluate(self.model, self.val_loader, self.device)
        metrics: dict[str, Any] = {"phase": spec.name, "epoch": epoch + 1, "lambda": lambda_, "lr": lr,
                                   "train_loss": train["loss"], "train_accuracy": train["accuracy"],
                                   "val_loss": val["loss"], "val_accuracy": val["accuracy"]}
        if isinstance(self.model, ODiMO):
            report = self.model.cost_report()
            metrics["latency_cycles"] = report["latency_cycles"]
            metrics["energy_uj"] = report["energy_uj"]
        return metrics
