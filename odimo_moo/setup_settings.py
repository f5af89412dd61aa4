"""The settings of a problem instance, :class:`~odimo_moo.workbench.Setup`'s fields, declared once:
help, type, bounds and choices (their defaults are Setup's). The options of ``odimo search`` and
``odimo compare`` (:func:`odimo_moo.commands.common.add_setup_options`) and the study keys of the
same names (:class:`~odimo_moo.study.schema.StudyConfig`) are built from them. Torch-free, so
that the study schema can read it."""

from __future__ import annotations

from .devices import DEVICES
from .strategy import COST_FIELDS
from .study.settings import Setting

#: The cost metrics a problem may minimise, in the order of :data:`~odimo_moo.strategy.COST_FIELDS`.
METRIC_NAMES = tuple(COST_FIELDS)

SETUP_SETTINGS: dict[str, Setting] = {
    "soc": Setting("registered SoC name, see `odimo plugins`", str),
    "model": Setting("registered model name", str),
    "dataset": Setting("dataset name, a key of `odimo_moo.data.DATASETS`; digits is embedded", str),
    "metric": Setting("cost in the loss", str, choices=METRIC_NAMES),
    "data_root": Setting("folder holding the dataset files", str),
    "download": Setting("download the dataset if missing (needs network)", bool),
    "data_limit": Setting("cap each split at this many samples", int, minimum=1, note=" sample per split"),
    "image_size": Setting("input resolution for datasets that take one (digits: upsampled from 8; imagenet)", int,
                          minimum=1, note=" pixel"),
    "val_fraction": Setting("fraction of the training data held out for validation", float, minimum=0, maximum=1,
                            open_bounds=True),
    "seed": Setting("seed of data splits, initialisation and search", int),
    "device": Setting("device for training", str, choices=DEVICES),
    "plugins": Setting("plugin modules or files to load"),
    "exclude": Setting("layer name (fx qualified name) never to split; repeatable"),
    "progress": Setting("progress bars", bool),
}
