"""The training phases that strategies compose, each a checkpointed :class:`~odimo_moo.training.PhaseRunner`
phase with the hyperparameters of a :class:`~odimo_moo.recipe.Recipe`:

* :func:`warmup`: the lambda-free warmup (a random split per forward), shared by every strategy and
  cached under the workbench's ``cache_dir`` by everything it depends on (:func:`warmup_key`);
* :func:`search`: ODiMO's gradient search, weights and assignment on task loss + lambda * cost (or
  to a cost target), ``search_epochs``;
* :func:`train_fixed`: the search's counterpart for a fixed mapping, weights only under the frozen
  mapping, ``search_epochs``;
* :func:`finetune`: weights only under the frozen mapping, ``finetune_epochs``, ending on the epoch
  with the best validation accuracy.

Every phase takes the history rows of the phases before it and returns them with its own. A phase's
checkpoint fingerprint, which also seeds its random streams, is :func:`run_key` (:func:`warmup_key`
for the warmup). The :class:`~odimo_moo.workbench.Workbench` supplies the data, the supernet and the
report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .batchnorm import CALIBRATION_BATCHES
from .checkpoint import atomic_write_json, check_writable
from .cost_target import CostTarget
from .recipe import Recipe
from .setup_settings import Setup
from .split_layer import MaskMode
from .target_landing import land_on_target
from .training import PhaseRunner, PhaseSpec, assignment_optimizer, weights_optimizer

if TYPE_CHECKING:
    from .searchable import ODiMO
    from .workbench import Workbench

History = list[dict[str, Any]]

#: lambda at the start of a search to a cost target (unless the recipe gives one): low, so that the
#: cost comes down to the target gradually rather than overshooting it (DIANA saturates at ~1).
TARGET_START_WEIGHT = 0.01
#: The fine-tune's learning rate over the recipe's ``lr`` once BatchNorm is folded. Without batch
#: normalization the folded network diverges at the warmup's rate: on Fashion-MNIST (600 images, one
#: fine-tune epoch) full-width mobilenetv1_darkside all-cluster fell from 0.61 to 0.09 validation
#: accuracy at ``lr`` 1e-3 and reached 0.63 at 1e-4; DIANA ResNet-20 all-digital 0.55 vs 0.71.
FOLDED_LR_FACTOR = 0.1
#: Version of how the fine-tune folds BatchNorm, part of a folded fine-tune's fingerprint (so that a
#: resumed one continues only a fine-tune folded the same way). 2: a power-of-two ternary scale is
#: rounded from the scale in use and the folded channel keeps BatchNorm's mean
#: (:func:`odimo_moo.deploy.fold_batchnorm`; DIANA ResNet-8 on digits, one fine-tune epoch: test
#: accuracy 0.627 -> 0.721 over seeds 0-2).
FOLD_VERSION = 2
#: Version of what a cached warmup holds, part of its key: raised whenever a built-in SoC's data
#: formats change, which the setup (it names the SoC) does not show. 2: Darkside's activation steps
#: became powers of two (``clip / 256``). 3: DIANA's ternary weight scales became powers of two.
WARMUP_FORMAT = 3
#: The recipe keys a resumed phase may change: a longer phase may extend a finished one.
EPOCH_KEYS = ("warmup_epochs", "search_epochs", "finetune_epochs")


def _digest(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_key(setup: Setup, recipe: Recipe, cost: bool = True, **extra: Any) -> str:
    """What a resumed phase must share with the run that wrote its checkpoint: the setup (without
    its cost metric for a phase with no cost term, ``cost=False``) and the recipe
    (:meth:`Recipe.identity`), except the epoch counts, and ``extra`` (a fixed mapping)."""
    settings = {k: v for k, v in recipe.identity().items() if k not in EPOCH_KEYS}
    return _digest({"setup": setup.identity(cost), "recipe": settings, **extra})


def warmup_key(setup: Setup, recipe: Recipe) -> str:
    """Everything the warmup depends on (:meth:`Recipe.warmup_key`; not the cost metric: the warmup
    has no cost term, so latency and energy runs share it): its cache key."""
    return _digest({"setup": setup.identity(cost=False), "recipe": recipe.warmup_key(), "format": WARMUP_FORMAT})


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock so that concurrent workers compute a shared warmup once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _runner(bench: Workbench, model: ODiMO, recipe: Recipe, checkpoint_dir: Path, fingerprint: str,
            history: History) -> PhaseRunner:
    """A phase runner on the setup's data, continuing ``history``."""
    train, val, _ = bench.loaders(recipe.batch_size)
    runner = PhaseRunner(model, train, val, bench.device, checkpoint_dir, progress=bench.setup.progress,
                         on_epoch_end=bench.on_epoch_end or (lambda phase, epoch, metrics: None),
                         fingerprint=fingerprint,
                         calibration=bench.calibration_batches(CALIBRATION_BATCHES, recipe.batch_size))
    runner.history = list(history)
    return runner


def warmup(bench: Workbench, recipe: Recipe) -> tuple[ODiMO, History]:
    """The supernet after the lambda-free warmup (random split per forward), in search mode, and the
    warmup's history; cached under ``bench.cache_dir`` and shared by every run that asks."""
    model = bench.supernet(recipe)
    key = warmup_key(bench.setup, recipe)
    with _file_lock(bench.cache_dir / f"warmup-{key}.lock"):
        model.set_mode(MaskMode.SAMPLE)
        runner = _runner(bench, model, recipe, bench.cache_dir / f"warmup-{key}", key, [])
        history = runner.run(PhaseSpec("warmup", recipe.warmup_epochs, lambda: [weights_optimizer(model, recipe)],
                                       lr_schedule=recipe.lr_schedule))
    model.set_mode(MaskMode.SEARCH)
    return model, history


def search(bench: Workbench, model: ODiMO, recipe: Recipe, workdir: Path, history: History) -> History:
    """ODiMO's search phase on the warmed-up ``model``: weights and assignment together, lambda by
    :meth:`Recipe.lambda_at` and the softmax temperature by :meth:`Recipe.temperature_at`. With a
    ``cost_target`` lambda adapts every step instead (:class:`~odimo_moo.cost_target.CostTarget`),
    and the final assignment lands on the target (``target_landing.json``)."""
    runner = _runner(bench, model, recipe, workdir / "checkpoints", run_key(bench.setup, recipe), history)
    target = None
    if recipe.cost_target > 0:
        target = CostTarget(recipe.cost_target / model.reference_cost(), weight=recipe.lambda_ or TARGET_START_WEIGHT)
    runner.run(PhaseSpec("search", recipe.search_epochs,
                         lambda: [weights_optimizer(model, recipe), assignment_optimizer(model, recipe)],
                         lambda_at=recipe.lambda_at, lr_schedule=recipe.lr_schedule, cost_target=target,
                         on_epoch_start=lambda epoch: model.set_temperature(recipe.temperature_at(epoch))))
    if target is not None:
        atomic_write_json(workdir / "target_landing.json", land_on_target(model, recipe.cost_target).to_dict())
    return runner.history


def _fixed_mapping_runner(bench: Workbench, model: ODiMO, recipe: Recipe, workdir: Path,
                          history: History, **extra: Any) -> PhaseRunner:
    """The runner of a phase under ``model``'s frozen mapping (part of its fingerprint, with ``extra``;
    the cost metric is not: a fixed mapping trains the same whichever cost the run reports)."""
    fingerprint = run_key(bench.setup, recipe, cost=False, mapping=model.mapping(), **extra)
    return _runner(bench, model, recipe, workdir / "checkpoints", fingerprint, history)


def train_fixed(bench: Workbench, model: ODiMO, recipe: Recipe, workdir: Path, history: History) -> History:
    """Train ``model``'s weights ``search_epochs`` epochs under its frozen mapping (phase ``train``,
    where the gradient search searches): a fixed mapping's equal footing with the search."""
    check_writable(workdir)
    model.freeze_mapping()
    runner = _fixed_mapping_runner(bench, model, recipe, workdir, history)
    return runner.run(PhaseSpec("train", recipe.search_epochs, lambda: [weights_optimizer(model, recipe)],
                                lr_schedule=recipe.lr_schedule))


def finetune(bench: Workbench, model: ODiMO, recipe: Recipe, workdir: Path, history: History) -> tuple[History, int]:
    """Fine-tune ``model`` ``finetune_epochs`` epochs under its frozen mapping and end on the epoch with
    the best validation accuracy; returns the history and that epoch (0: none).

    ``finetune_from: scratch`` first puts back a fresh initialisation (the mapping kept); with
    ``deploy_format`` and ``quantize`` BatchNorm is folded into the layer before it, as the export does
    (:data:`FOLD_VERSION`), and the fine-tune runs at :data:`FOLDED_LR_FACTOR` times the recipe's ``lr``.
    """
    check_writable(workdir)
    model.freeze_mapping()
    if recipe.finetune_from == "scratch":
        mapping = {name: layer.fixed_units.clone() for name, layer in model.split_layers()}
        model.load_state_dict(bench.supernet(recipe).state_dict())
        for name, layer in model.split_layers():
            layer.fix(mapping[name])
    fold: dict[str, Any] = {}
    if recipe.deploy_format and recipe.quantize:
        model.fold_batchnorm()
        recipe = dataclasses.replace(recipe, lr=recipe.lr * FOLDED_LR_FACTOR)
        fold = {"fold": FOLD_VERSION}
    runner = _fixed_mapping_runner(bench, model, recipe, workdir, history, **fold)
    runner.run(PhaseSpec("finetune", recipe.finetune_epochs, lambda: [weights_optimizer(model, recipe)],
                         lr_schedule=recipe.lr_schedule, keep_best=True))
    return runner.history, runner.selected_epochs.get("finetune", 0)


def train_mapping(bench: Workbench, model: ODiMO, recipe: Recipe, workdir: Path,
                  history: History) -> tuple[History, int]:
    """A fixed mapping's training after the shared warmup: :func:`train_fixed`, then :func:`finetune`;
    every method's point gets the same epochs, recipe, learning-rate schedule and data."""
    return finetune(bench, model, recipe, workdir, train_fixed(bench, model, recipe, workdir, history))
