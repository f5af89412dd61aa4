"""The problem instance, :class:`Setup`: which SoC, model, data and cost metric every strategy shares,
each field declared once with its help, type, bounds, choices and default (:func:`~.study.settings.setting`).

The options of ``odimo search`` and ``odimo compare`` (:func:`odimo_moo.commands.common.add_setup_options`)
and the study keys of the same names (:class:`~odimo_moo.study.schema.StudyConfig`) are built from
these declarations. Torch-free, so that ``--help`` and the study schema read it without importing
torch; :mod:`odimo_moo.workbench` loads what a Setup names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .devices import DEVICES
from .errors import UsageError
from .front_point import COST_FIELDS
from .study.settings import Setting, declared, setting

#: The cost metrics a problem may minimise, in the order of :data:`~odimo_moo.front_point.COST_FIELDS`.
METRIC_NAMES = tuple(COST_FIELDS)

#: The fields that change where or how verbosely a problem is trained, not what is trained.
NOT_IDENTITY = ("device", "progress", "plugins")
#: The fields only a cost term reads: training without one (the warmup, a fixed mapping's) ignores them.
COST_ONLY = ("metric",)


@dataclass(frozen=True)
class Setup:
    """A problem instance: which SoC, model, data and cost metric; shared by every strategy."""

    soc: str = setting("registered SoC name, see `odimo plugins`", default="diana", kind=str)
    model: str = setting("registered model name", default="resnet8", kind=str)
    dataset: str = setting("dataset name, a key of `odimo_moo.data.DATASETS`; digits is embedded",
                           default="digits", kind=str)
    metric: str = setting("cost in the loss", default="latency", kind=str, choices=METRIC_NAMES)
    data_root: str | None = setting("folder holding the dataset files", default=None, kind=str)
    download: bool = setting("download the dataset if missing (needs network)", default=False, kind=bool)
    data_limit: int | None = setting("cap each split at this many samples", default=None, kind=int, minimum=1,
                                     note=" sample per split")
    image_size: int | None = setting("input resolution for datasets that take one (digits: upsampled from 8; "
                                     "imagenet)", default=None, kind=int, minimum=1, note=" pixel")
    val_fraction: float = setting("fraction of the training data held out for validation", default=0.1,
                                  kind=float, minimum=0, maximum=1, open_bounds=True)
    seed: int = setting("seed of data splits, initialisation and search", default=0, kind=int)
    device: str = setting("device for training", default="auto", kind=str, choices=DEVICES)
    plugins: tuple[str, ...] = setting("plugin modules or files to load", default=())
    exclude: tuple[str, ...] = setting("layer name (fx qualified name) never to split; repeatable", default=())
    progress: bool = setting("progress bars", default=True, kind=bool)

    def __post_init__(self) -> None:
        for field, rule in declared(Setup):
            value = getattr(self, field.name)
            if rule.choices and value not in rule.choices:
                raise UsageError(f"unknown {field.name} {value!r}; choose one of {', '.join(rule.choices)}")

    def identity(self, cost: bool = True) -> dict[str, Any]:
        """The fields that change what is trained (not where or how verbosely); with ``cost=False``
        without the cost metric, for training that has no cost term (:data:`COST_ONLY`)."""
        data = dataclasses.asdict(self)
        for key in NOT_IDENTITY + (() if cost else COST_ONLY):
            data.pop(key)
        return data


#: Each Setup field's declaration, by name (what the commands' options and the study keys read).
SETUP_SETTINGS: dict[str, Setting] = {field.name: rule for field, rule in declared(Setup)}
