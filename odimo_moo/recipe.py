"""The training recipe of one ODiMO run: phases, optimizers, lambda schedule, parametrization."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .assignment_names import INIT_STRATEGIES, PARAMETRIZATION_NAMES
from .errors import UsageError
from .study.problems import coerce, kind_name
from .study.settings import bound_problem, declared, setting

OPTIMIZERS = ("adam", "sgd")
#: Where the gradient search's final training starts from (``Recipe.finetune_from``).
FINETUNE_STARTS = ("search", "warmup", "scratch")

#: Learning-rate schedules of the weights' optimizer, applied per phase (see ``training.lr_factor``).
LR_SCHEDULES = ("cosine", "constant")

#: The default lambda grid of ``odimo compare``. lambda weighs the dimensionless cost term
#: ``ln(cost / cost on the default unit)`` (:attr:`odimo_moo.searchable.ODiMO.cost`), so one grid spans
#: the front on every SoC.
DEFAULT_LAMBDAS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)

#: The recipe keys only the gradient search reads; strategies that train fixed mappings leave them out.
#: (``search_epochs`` is not one of them: a fixed mapping trains ``search_epochs + finetune_epochs``.)
SEARCH_ONLY_KEYS = ("nas_lr", "lambda", "lambda_ramp", "temperature", "temperature_decay", "gumbel", "cost_target")

#: Where a run's identity (checkpoint fingerprint, seed of each phase's random streams; see
#: :meth:`Recipe.identity`) spells a key otherwise: lambda was first hashed as ``cost_weight``, and
#: keeping that spelling keeps the identity, and so the results, of every run written before.
IDENTITY_SPELLING = {"lambda": "cost_weight"}


@dataclass(frozen=True)
class Recipe:
    """Hyperparameters of warmup, search and fine-tune.

    ``lambda_`` is lambda (key ``lambda``: a trailing ``_`` only escapes a Python keyword, see
    :func:`key_of`), the weight of the dimensionless cost term ``ln(cost / cost with every
    searched layer on the SoC's default unit)``: lowering the cost by 1 % is worth lambda / 100 of task
    loss on any SoC (see :data:`DEFAULT_LAMBDAS`). During search it ramps linearly from lambda/100 to
    lambda over the first ``lambda_ramp`` fraction of the epochs (0 disables the ramp). The softmax temperature
    starts at ``temperature`` and is multiplied by ``exp(-temperature_decay)`` every search epoch.
    ``lr_schedule`` is the weights' learning rate over each phase: ``cosine`` (from ``lr`` towards 0
    over the phase's epochs, restarting at every phase) or ``constant``; the assignment's ``nas_lr``
    stays constant. ``finetune_from`` is where the searched mapping's final training starts: ``search``
    (the paper's protocol: the search's weights, ``finetune_epochs`` more), ``warmup`` (the shared
    warmed-up supernet, ``search_epochs + finetune_epochs`` under the frozen mapping: exactly the
    training every fixed-mapping baseline gets, so a comparison judges the mappings alone) or
    ``scratch`` (a fresh initialisation, ``finetune_epochs``). A ``cost_target`` > 0 (in the setup
    metric's unit: cycles or microjoules) searches to that cost: lambda starts at ``lambda_`` (0.01
    if 0) and is adapted every step (:class:`odimo_moo.cost_target.CostTarget`), without the ramp.
    ``deploy_format`` (with ``quantize``) trains as deployed: the layers that are not searched run in
    their unit's data format in every phase, and the fine-tune folds BatchNorm into the layer before
    it, so the reported accuracy is the integer export's; false keeps them float and BatchNorm apart.
    """

    warmup_epochs: int = setting("epochs of the lambda-free warmup (shared by every strategy, cached)",
                                 default=3, kind=int, minimum=0)
    search_epochs: int = setting("epochs of the search (or of a fixed mapping's training)", default=6, kind=int,
                                 minimum=0)
    finetune_epochs: int = setting("epochs of the fine-tune under the frozen mapping (best validation epoch kept)",
                                   default=3, kind=int, minimum=0)
    batch_size: int = setting("training batch size", default=64, kind=int, minimum=1)
    lr: float = setting("learning rate of the weights", default=1e-3, kind=float, minimum=0, open_bounds=True)
    nas_lr: float = setting("learning rate of the assignment (constant)", default=1e-2, kind=float, minimum=0,
                            open_bounds=True)
    weight_decay: float = setting("weight decay of the weights", default=1e-4, kind=float, minimum=0)
    optimizer: str = setting("optimizer of weights and assignment", default="adam", kind=str, choices=OPTIMIZERS)
    lr_schedule: str = setting("the weights' learning rate over each phase", default="cosine", kind=str,
                               choices=LR_SCHEDULES)
    lambda_: float = setting("weight of ln(cost / cost on the default unit) in the loss: 1 % less cost is worth "
                             "lambda/100 of task loss", default=0.0, kind=float, minimum=0)
    lambda_ramp: float = setting("fraction of the search epochs over which lambda ramps up from lambda/100 "
                                 "(0: no ramp)", default=0.5, kind=float, minimum=0, maximum=1)
    parametrization: str = setting("channel-to-unit assignment", default="thermometric", kind=str,
                                   choices=PARAMETRIZATION_NAMES)
    init: str = setting("initial assignment", default="balanced", kind=str, choices=INIT_STRATEGIES)
    temperature: float = setting("initial softmax temperature (softmax parametrization)", default=1.0, kind=float,
                                 minimum=0, open_bounds=True)
    temperature_decay: float = setting("the temperature is multiplied by exp(-temperature_decay) every search epoch",
                                       default=0.045, kind=float)
    gumbel: bool = setting("Gumbel noise in the softmax assignment", default=False, kind=bool)
    quantize: bool = setting("train the units' data formats (fake quantization)", default=True, kind=bool)
    deploy_format: bool = setting("with quantize: unsearched layers in their unit's format, BatchNorm folded for the "
                                  "fine-tune (the integer export's accuracy)", default=True, kind=bool)
    finetune_from: str = setting("where the searched mapping's final training starts", default="search", kind=str,
                                 choices=FINETUNE_STARTS)
    cost_target: float = setting("search to this cost (the metric's unit) instead of a lambda; 0: none",
                                 default=0.0, kind=float, minimum=0, note=" (0: none)")

    def __post_init__(self) -> None:
        for field, rule in declared(Recipe):
            value = getattr(self, field.name)
            problem = bound_problem(value, rule)
            if problem is None and isinstance(value, float) and not math.isfinite(value):
                problem = f"must be a finite number, got {value}"
            if problem:
                raise UsageError(f"recipe: {key_of(field.name)} {problem}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Recipe":
        """Build from a flat mapping of recipe keys (:meth:`kinds`), each converted to its field's type by
        the one rule set of every setting (:func:`~odimo_moo.study.problems.coerce`: booleans are only
        true or false, an integer never truncates, numbers may be given as strings)."""
        known = {key_of(f.name): (f.name, rule.kind) for f, rule in declared(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise UsageError(f"unknown training parameter(s) {', '.join(unknown)}; known: {', '.join(known)}")
        converted = {}
        for key, value in params.items():
            name, kind = known[key]
            try:
                converted[name] = coerce(value, kind)
            except (TypeError, ValueError, OverflowError):
                raise UsageError(f"training parameter {key}={value!r} must be {kind_name(kind)}") from None
        return cls(**converted)

    @classmethod
    def kinds(cls) -> dict[str, type]:
        """Each recipe key's type, by key as settings, ``--set`` and records name it (``lambda``, not
        ``lambda_``)."""
        return {key_of(f.name): rule.kind for f, rule in declared(cls)}

    @classmethod
    def fixed_mapping_defaults(cls) -> dict[str, Any]:
        """The default recipe of a strategy that trains fixed mappings (no :data:`SEARCH_ONLY_KEYS`)."""
        return {k: v for k, v in cls().as_dict().items() if k not in SEARCH_ONLY_KEYS}

    def lambda_at(self, epoch: int) -> float:
        """lambda for search epoch ``epoch`` (0-based): linear from lambda/100 at epoch 0 to lambda at
        epoch ``lambda_ramp * search_epochs`` and after; never above lambda."""
        ramp_epochs = self.lambda_ramp * self.search_epochs
        if ramp_epochs <= 0 or epoch >= ramp_epochs:
            return self.lambda_
        start = self.lambda_ / 100
        return start + (self.lambda_ - start) * epoch / ramp_epochs

    def temperature_at(self, epoch: int) -> float:
        return self.temperature * math.exp(-self.temperature_decay * epoch)

    def warmup_key(self) -> dict[str, Any]:
        """Everything of the recipe the lambda-independent warmup depends on."""
        return {"warmup_epochs": self.warmup_epochs, "batch_size": self.batch_size, "lr": self.lr,
                "weight_decay": self.weight_decay, "optimizer": self.optimizer,
                "lr_schedule": self.lr_schedule,
                "parametrization": self.parametrization, "quantize": self.quantize,
                "deploy_format": self.deploy_format,
                "init": self.init}

    def as_dict(self) -> dict[str, Any]:
        """The recipe by key (what records and strategies' parameters hold)."""
        return {key_of(name): value for name, value in dataclasses.asdict(self).items()}

    def identity(self) -> dict[str, Any]:
        """The recipe as a run's identity hashes it: :meth:`as_dict` in :data:`IDENTITY_SPELLING`."""
        return {IDENTITY_SPELLING.get(key, key): value for key, value in self.as_dict().items()}


def key_of(field_name: str) -> str:
    """A recipe field's key: its name without the trailing ``_`` that escapes a Python keyword."""
    return field_name.removesuffix("_")

