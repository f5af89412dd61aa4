"""Everything a strategy needs for one problem instance (a :class:`~odimo_moo.setup_settings.Setup`):
the SoC, the model, the data and the device it names, the untrained supernet, evaluation, and the
report of a trained network (export and artifacts). The phases that train it are in :mod:`.phases`."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import nn

from .checkpoint import atomic_write_json
from .devices import resolve_device
from .errors import UsageError
from .models import build_model
from .recipe import Recipe
from .registry import PluginRegistry, pick
from .searchable import ODiMO
from .setup_settings import Setup
from .soc import SoC
from .strategy import Outcome
from .training import evaluate, seed_everything

if TYPE_CHECKING:
    from .data import DataBundle


@dataclass
class Workbench:
    """Loads the SoC, model and data of a :class:`Setup`; evaluates and reports what the phases
    (:mod:`odimo_moo.phases`) trained. ``cache_dir`` holds the shared warmups."""

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

    def evaluate(self, model: nn.Module, split: str = "val", batch_size: int = 256) -> float:
        train, val, test = self.loaders(batch_size)
        loader = {"train": train, "val": val, "test": test}[split]
        return evaluate(model, loader, self.device)["accuracy"]

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
