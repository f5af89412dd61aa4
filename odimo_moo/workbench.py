"""Everything a strategy needs for one problem instance: SoC, model, data, device, and the shared
phases (cached lambda-free warmup, checkpointed fine-tune, evaluation, export and artifacts)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import torch
from torch import nn

from .batchnorm import CALIBRATION_BATCHES
from .checkpoint import atomic_write_json, check_writable
from .devices import resolve_device
from .errors import UsageError
from .models import build_model
from .recipe import Recipe
from .registry import PluginRegistry, pick
from .searchable import ODiMO
from .setup_settings import Setup
from .soc import SoC
from .split_layer import MaskMode
from .strategy import Outcome
from .training import PhaseRunner, PhaseSpec, evaluate, seed_everything, weights_optimizer

if TYPE_CHECKING:
    from .data import DataBundle


def _digest(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


@dataclass
class Workbench:
    """Loads the SoC, model and data of a :class:`Setup` and runs the phases every strategy shares."""

    setup: Setup
    registry: PluginRegistry | None = None
    on_epoch_end: Callable[[str, int, dict[str, Any]], None] | None = None
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "odimo-moo" / "warmup")
    #: False: a point's phase checkpoints are deleted once its result.json is written. Compare runs
    #: and studies never resume a finished point, and its checkpoints are the bulk of its folder
    #: (weights, optimizer moments and the best epoch: ~640 MB for full-width mobilenetv1_darkside).
    keep_checkpoints: bool = True
    _loaders: dict[int, tuple] = field(default_factory=dict, repr=False)
    _calibration: dict[tuple[int, int], list[torch.Tensor]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.registry is None:
            self.registry = PluginRegistry.load(self.setup.plugins)
        self.soc: SoC = pick(self.registry.socs(), self.setup.soc, "SoC")
        self._models = self.registry.models()
        pick(self._models, self.setup.model, "model")
        self.device = resolve_device(self.setup.device)

    @cached_property
    def data(self) -> DataBundle:
        options = {} if self.setup.image_size is None else {"image_size": self.setup.image_size}
        from .data import load_dataset  # torchvision: imported when data is first needed

        return load_dataset(self.setup.dataset, self.setup.data_root, seed=self.setup.seed,
                            val_fraction=self.setup.val_fraction, download=self.setup.download,
                            limit=self.setup.data_limit, **options)

    def loaders(self, batch_size: int) -> tuple:
        if batch_size not in self._loaders:
            from .data import make_loaders

            self._loaders[batch_size] = make_loaders(self.data, batch_size, seed=self.setup.seed)
        return self._loaders[batch_size]

    def calibration_batches(self, count: int, batch_size: int) -> list[torch.Tensor]:
        """``count`` fixed batches of ``batch_size`` training inputs (fewer if the training split is
        smaller), drawn with the setup's seed, apart from the training loader's shuffling, and cached:
        one-shot scoring recalibrates BatchNorm on the same images for every mapping."""
        key = (count, batch_size)
        if key not in self._calibration:
            order = torch.randperm(len(self.data.train), generator=torch.Generator().manual_seed(self.setup.seed))
            inputs = [self.data.train[i][0] for i in order[:count * batch_size].tolist()]
            self._calibration[key] = [torch.stack(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
        return self._calibration[key]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.data.in_channels,) + tuple(self.data.input_size)

    def base_model(self) -> nn.Module:
        """A freshly initialised (seeded) instance of the setup's model."""
        seed_everything(self.setup.seed)
        return build_model(self._models, self.setup.model, self.data.num_classes, self.data.in_channels,
                           self.data.input_size)

    def supernet(self, recipe: Recipe) -> ODiMO:
        """The searchable model of the setup, on the device, before any training."""
        options: dict[str, Any] = {}
        if recipe.parametrization == "softmax":
            options = {"gumbel": recipe.gumbel, "temperature": recipe.temperature}
        model = ODiMO(self.base_model(), self.soc, self.input_shape, parametrization=recipe.parametrization,
                      init=recipe.init, metric=self.setup.metric, quantize=recipe.quantize,
                      exclude=self.setup.exclude, seed=self.setup.seed, assignment_options=options,
                      deploy_format=recipe.deploy_format)
        if not model.split_names:
            excluded = f" (with --exclude {', '.join(self.setup.exclude)})" if self.setup.exclude else ""
            raise UsageError(f"model {self.setup.model!r} has no layer that two units of SoC {self.setup.soc!r} "
                             f"can both run{excluded}: there is no mapping to search; choose a model with such "
                             f"layers (`odimo plugins` lists what each unit supports)")
        return model.to(self.device)

    def run_key(self, recipe: Recipe, **extra: Any) -> str:
        """What a resumed phase must share with the run that wrote its checkpoint: the setup and the
        recipe, except the epoch counts (a longer phase may extend a finished one)."""
        settings = {k: v for k, v in recipe.as_dict().items()
                    if k not in ("warmup_epochs", "search_epochs", "finetune_epochs")}
        return _digest({"setup": self.setup.identity(), "recipe": settings, **extra})

    def runner(self, model: nn.Module, recipe: Recipe, checkpoint_dir: Path,
               fingerprint: str | None = None) -> PhaseRunner:
        train, val, _ = self.loaders(recipe.batch_size)
        return PhaseRunner(model, train, val, self.device, checkpoint_dir, progress=self.setup.progress,
                           on_epoch_end=self.on_epoch_end or (lambda phase, epoch, metrics: None),
                           fingerprint=fingerprint or self.run_key(recipe),
                           calibration=self.calibration_batches(CALIBRATION_BATCHES, recipe.batch_size))

    def warmup_key(self, recipe: Recipe) -> str:
        return _digest({"setup": self.setup.identity(), "recipe": recipe.warmup_key(), "format": 1})

    def warm_supernet(self, recipe: Recipe) -> tuple[ODiMO, list[dict[str, Any]]]:
        """The supernet after the lambda-free warmup (random split per forward), cached under
        ``cache_dir`` by everything the warmup depends on and shared by every trial that asks."""
        model = self.supernet(recipe)
        key = self.warmup_key(recipe)
        with _file_lock(self.cache_dir / f"warmup-{key}.lock"):
            model.set_mode(MaskMode.SAMPLE)
            runner = self.runner(model, recipe, self.cache_dir / f"warmup-{key}", fingerprint=key)
            history = runner.run(PhaseSpec("warmup", recipe.warmup_epochs,
                                           lambda: [weights_optimizer(model, recipe)],
                                           lr_schedule=recipe.lr_schedule))
        model.set_mode(MaskMode.SEARCH)
        return model, history

    def evaluate(self, model: nn.Module, split: str = "val", batch_size: int = 256) -> float:
        train, val, test = self.loaders(batch_size)
        loader = {"train": train, "val": val, "test": test}[split]
        return evaluate(model, loader, self.device)["accuracy"]

    def train_mapping_and_report(self, model: ODiMO, recipe: Recipe, workdir: Path, strategy: str,
                                 params: Mapping[str, Any], history: list[dict[str, Any]] | None = None,
                                 label: str = "", oneshot: Mapping[str, float] | None = None) -> Outcome:
        """Train a fixed mapping on equal footing with the gradient search, then report it.

        ``model`` (the warmed-up supernet with its mapping forced) trains ``search_epochs`` epochs of
        weights only under its frozen mapping (phase ``train``, where the gradient search searches),
        then :meth:`finetune_and_report` trains ``finetune_epochs`` more: after the shared warmup every
        method's point gets the same epochs, recipe, learning-rate schedule and data.
        """
        check_writable(workdir)
        model.freeze_mapping()
        runner = self.runner(model, recipe, workdir / "checkpoints",
                             fingerprint=self.run_key(recipe, mapping=model.mapping()))
        runner.history = list(history or [])
        runner.run(PhaseSpec("train", recipe.search_epochs, lambda: [weights_optimizer(model, recipe)],
                             lr_schedule=recipe.lr_schedule))
        return self.finetune_and_report(model, recipe, workdir, strategy, params, runner.history, label, oneshot)

    def finetune_and_report(self, model: ODiMO, recipe: Recipe, workdir: Path, strategy: str,
                            params: Mapping[str, Any], history: list[dict[str, Any]] | None = None,
                            label: str = "", oneshot: Mapping[str, float] | None = None) -> Outcome:
        """Fine-tune ``model`` under its frozen mapping, keep the epoch with the best validation
        accuracy, evaluate it on the test split, export, and write artifacts.

        The same recipe for every strategy, so their points compare on equal terms. ``history`` holds
        the rows of the phases before (warmup included); ``oneshot`` is this point's share of a
        one-shot search (``evaluations``, ``images``, ``wall_s``, ``cpu_s``), if any.
        """
        check_writable(workdir)
        model.freeze_mapping()
        if recipe.finetune_from == "scratch":
            mapping = {name: layer.fixed_units.clone() for name, layer in model.split_layers()}
            model.load_state_dict(self.supernet(recipe).state_dict())
            for name, layer in model.split_layers():
                layer.fix(mapping[name])
        if recipe.deploy_format and recipe.quantize:
            model.fold_batchnorm()  # trained as deployed: the export folds BatchNorm, so the fine-tune does
        runner = self.runner(model, recipe, workdir / "checkpoints",
                             fingerprint=self.run_key(recipe, mapping=model.mapping()))
        runner.history = list(history or [])
        runner.run(PhaseSpec("finetune", recipe.finetune_epochs, lambda: [weights_optimizer(model, recipe)],
                             lr_schedule=recipe.lr_schedule, keep_best=True))
        return self.report(model, workdir, strategy, params, runner.history, label, oneshot,
                           runner.selected_epochs.get("finetune", 0))

    def report(self, model: ODiMO, workdir: Path, strategy: str, params: Mapping[str, Any],
               history: list[dict[str, Any]], label: str, oneshot: Mapping[str, float] | None = None,
               selected_epoch: int = 0) -> Outcome:
        """Evaluate a frozen-mapping model, export it, and write result, mapping, metrics and model files.

        The outcome's compute is read from ``history``'s rows after the warmup (each epoch's recorded
        seconds, so a resumed run counts every epoch once) plus ``oneshot``'s share.
        """
        from .artifacts import write_artifacts

        model.eval()
        accuracy = self.evaluate(model, "test")
        val_accuracy = self.evaluate(model, "val")
        costs = model.cost_report()
        artifacts = write_artifacts(model, workdir, history, self.loaders(64)[1], self.device)
        trained = [row for row in history if row.get("phase") != "warmup"]
        phase_wall: dict[str, float] = {}
        phase_cpu: dict[str, float] = {}
        for row in trained:
            phase_wall[row["phase"]] = phase_wall.get(row["phase"], 0.0) + float(row.get("wall_s", 0.0))
            phase_cpu[row["phase"]] = phase_cpu.get(row["phase"], 0.0) + float(row.get("cpu_s", 0.0))
        share = dict(oneshot or {})
        if share:
            phase_wall["oneshot"] = float(share.get("wall_s", 0.0))
            phase_cpu["oneshot"] = float(share.get("cpu_s", 0.0))
        outcome = Outcome(strategy=strategy, accuracy=accuracy, val_accuracy=val_accuracy,
                          latency_cycles=costs["latency_cycles"], energy_uj=costs["energy_uj"],
                          channel_split=model.channel_split(), params=dict(params), artifacts=artifacts,
                          wall_time_s=sum(phase_wall.values()), trainings=1, label=label,
                          train_epochs=len(trained), oneshot_evaluations=float(share.get("evaluations", 0.0)),
                          oneshot_images=float(share.get("images", 0.0)),
                          cpu_time_s=sum(phase_cpu.values()), phase_wall_s=phase_wall, phase_cpu_s=phase_cpu,
                          selected_epoch=selected_epoch, seed=self.setup.seed)
        atomic_write_json(workdir / "result.json", outcome.to_dict())
        if not self.keep_checkpoints:
            shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
        return outcome
