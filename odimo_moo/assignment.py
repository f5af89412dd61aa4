"""Trainable channel-to-unit assignments of one split layer.

An assignment turns its parameters into a mask ``m`` of shape ``[C, K]``: ``m[c, k]`` is how much
output channel ``c`` comes from unit ``k``. Hard masks are one-hot per channel with straight-through
gradients. Two parametrizations:

* :class:`ThermometricAssignment` (ODiMO journal version): contiguous channel ranges per unit, one
  thermometer per boundary between consecutive units.
* :class:`SoftmaxAssignment` (ISLPED version): free per-channel choice, softmax over units,
  optionally Gumbel-noised and temperature-annealed.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import native_kernels
from .assignment_names import INIT_STRATEGIES, PARAMETRIZATION_NAMES
from .errors import UsageError

#: Softmax init: the winning logit of each channel is 1 + this spread times a uniform draw.
INIT_MARGIN_SPREAD = 0.5


def initial_counts(channels: int, units: int, init: str | Sequence[int], generator: torch.Generator | None) -> list[int]:
    """Channels per unit for an init strategy: ``first`` (all on unit 0; callers pick the order),
    ``balanced`` (as equal as possible), ``random`` (uniform random contiguous split) or explicit counts."""
    if not isinstance(init, str):
        counts = [int(c) for c in init]
        if len(counts) != units or sum(counts) != channels or min(counts) < 0:
            raise UsageError(f"initial split {counts} must have {units} non-negative counts adding up to {channels}")
        return counts
    if init == "first":
        return [channels] + [0] * (units - 1)
    if init == "balanced":
        base, extra = divmod(channels, units)
        return [base + (1 if k < extra else 0) for k in range(units)]
    if init == "random":
        cuts = torch.randint(0, channels + 1, (units - 1,), generator=generator).sort().values.tolist()
        bounds = [0] + cuts + [channels]
        return [bounds[k + 1] - bounds[k] for k in range(units)]
    raise UsageError(f"unknown assignment init {init!r}; choose one of {', '.join(INIT_STRATEGIES)} or give counts")


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """``hard`` forward, gradient of ``soft``."""
    return soft + (hard - soft).detach()


def contiguous_mask(counts: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """Hard ``[C, K]`` mask giving unit k the channels after units 0..k-1's."""
    unit_of_channel = torch.repeat_interleave(torch.arange(len(counts), device=device),
                                              torch.tensor(list(counts), device=device))
    return F.one_hot(unit_of_channel, len(counts)).float()


class Assignment(nn.Module):
    """Base class: parameters that assign each of ``channels`` outputs to one of ``units``."""

    def __init__(self, channels: int, units: int) -> None:
        super().__init__()
        if units < 2:
            raise UsageError(f"a split layer needs at least 2 units, got {units}")
        self.channels = channels
        self.units = units

    @abstractmethod
    def mask(self) -> torch.Tensor:
        """The current ``[C, K]`` mask (hard one-hot with straight-through gradient when ``hard``)."""

    def hard_assignment(self) -> torch.Tensor:
        """Unit index of every channel ``[C]`` (argmax of the noise-free mask)."""
        with torch.no_grad():
            return self.mask().argmax(dim=1)


class ThermometricAssignment(Assignment):
    """Contiguous ranges: unit 0 gets channels ``[0, p_1)``, unit k gets ``[p_k, p_{k+1})``.

    Boundary j has parameters ``alpha_j`` in R^C; ``theta_j[i] = sum_{l >= i} exp(alpha_j[l])`` is
    decreasing, and ``b_j = 1[theta_j > 0.5]`` (straight-through) is a prefix of ones of length
    ``p_j``. Prefixes are nested by a running maximum so that ``p_1 <= p_2 <= ...``. The boundary
    channels start close to the threshold.

    The published form has ``|alpha|`` where this has ``exp(alpha)``: both make the increments of
    ``theta`` non-negative, but ``|.|`` fails under momentum optimizers once a unit should get no
    channel. The gradient keeps pushing every alpha towards 0, Adam carries them through it, and the
    alphas then hover around 0 at about the learning rate, each adding that much to every ``theta``
    before it: with C * lr above 0.5 (128 channels at lr 1e-2) the empty unit's channels flip back
    in bulk, over and over (``benchmarks/mapping_bound.py``: latency-only search on Darkside ended 50x
    to 390x above the bound it had touched). ``exp`` has no such point and no dead gradient at 0.
    """

    def __init__(self, channels: int, units: int, init: str | Sequence[int] = "first",
                 generator: torch.Generator | None = None) -> None:
        super().__init__(channels, units)
        counts = initial_counts(channels, units, init, generator)
        prefixes = torch.tensor(counts[:-1], dtype=torch.float32).cumsum(0).unsqueeze(1)
        # theta_i = 0.5 * exp(g * (p - i - 0.5)) is positive, decreasing, and crosses 0.5 between
        # channels p - 1 and p; every increment theta_i - theta_{i+1} is strictly positive. Adam moves
        # each alpha by about lr per step, i.e. theta by about lr relatively: with g = 0.5 / C every
        # channel is within a factor exp(0.25) of the threshold, so a layer can change hands within
        # ~0.25 / lr steps (25 at lr 1e-2; g = 2 / C took 150 steps in benchmarks/mapping_bound.py).
        growth = 0.5 / channels
        index = torch.arange(channels, dtype=torch.float32).unsqueeze(0)
        theta = 0.5 * torch.exp(growth * (prefixes - index - 0.5))
        following = torch.cat([theta[:, 1:], torch.zeros_like(theta[:, :1])], dim=1)
        self.alpha = nn.Parameter(torch.log(theta - following))

    def thresholds(self) -> torch.Tensor:
        """``theta`` of shape ``[K-1, C]``."""
        return self.alpha.exp().flip(1).cumsum(1).flip(1)

    def mask(self) -> torch.Tensor:
        return thermometric_masks([self.alpha])[0][0]

    def reference_mask(self) -> torch.Tensor:
        """:meth:`mask` as plain differentiable ops (its specification)."""
        theta = self.thresholds()
        prefix = straight_through((theta > 0.5).float(), theta)
        # Nested prefixes: P_j = 1 - prod_{l <= j} (1 - b_l), a running "or" that keeps gradients.
        nested = 1.0 - torch.cumprod(1.0 - prefix, dim=0)
        first = nested[:1]
        middle = nested[1:] - nested[:-1]
        last = 1.0 - nested[-1:]
        return torch.cat([first, middle, last], dim=0).t()


def thermometric_masks(alphas: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The masks ``[C, K]`` of thermometric assignments with parameters ``alphas`` (``[K - 1, C]`` each)
    and their channel counts ``[K]`` (``mask.sum(0)``), all in one autograd node: a network's split
    layers get theirs in one node per step instead of a mask and a sum node per layer."""
    outputs = _ThermometricMasks.apply(*alphas)
    return list(outputs[:len(alphas)]), list(outputs[len(alphas):])


class _ThermometricMasks(torch.autograd.Function):
    """Thermometric masks and their channel counts (:func:`thermometric_masks`), with the values and
    gradients of :meth:`ThermometricAssignment.reference_mask` and of its column sums.

    Forward: ``b = 1[theta > 0.5]``, nested prefixes ``n_j = 1 - prod_{l <= j} (1 - b_l)``, columns
    ``n_0, n_1 - n_0, ..., 1 - n_{K-2}``. Backward: a count's gradient reaches every row of its column
    (added to the mask's, as autograd adds a sum node's); the columns' gradient reaches ``n_j`` as
    ``g_j - g_{j+1}``, ``b_i`` (straight-through to ``theta_i``) as the sum over ``j >= i`` of that
    times ``prod_{l <= j, l != i} (1 - b_l)``; ``theta``'s reversed cumulative sum becomes a forward
    cumulative sum, and ``exp(alpha)`` contributes itself. With 2 units: ``[b, 1 - b]``, gradient
    ``g_0 - g_1``. Where the compiled kernels apply, both passes after the ``exp`` are one kernel call
    per mask (:func:`odimo_moo.native_kernels.thermometric_mask`), with the same values.
    """

    @staticmethod
    def forward(ctx, *alphas: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        ctx.set_materialize_grads(False)
        masks, saved = [], []
        for alpha in alphas:
            mask, increments, open_ = _thermometric_mask(alpha)
            masks.append(mask)
            saved += [increments, open_]
        ctx.save_for_backward(*saved)
        return (*masks, *(mask.sum(dim=0) for mask in masks))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):  # type: ignore[override]
        saved = ctx.saved_tensors
        layers = len(saved) // 2
        grad_alphas = []
        for i in range(layers):
            grad, grad_counts = grads[i], grads[layers + i]
            increments, open_ = saved[2 * i], saved[2 * i + 1]
            if grad is None and grad_counts is None:
                grad_alphas.append(None)
                continue
            if grad_counts is not None:
                grad = grad_counts.expand(open_.shape[1], -1) if grad is None else grad + grad_counts
            grad_alphas.append(_thermometric_mask_backward(grad, increments, open_))
        return tuple(grad_alphas)


def _thermometric_mask(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One thermometric mask, with the increments ``exp(alpha)`` and the open flags ``1 - b``."""
    increments = alpha.exp()
    if native_kernels.applies(increments):
        mask, open_ = native_kernels.thermometric_mask(increments)
        return mask, increments, open_
    theta = increments.flip(1).cumsum(1).flip(1)
    open_ = (theta <= 0.5).to(alpha.dtype)  # 1 - b
    if len(alpha) == 1:
        return torch.cat([1.0 - open_, open_], dim=0).t(), increments, open_
    nested = 1.0 - open_.cumprod(0)
    return torch.cat([nested[:1], nested[1:] - nested[:-1], 1.0 - nested[-1:]], dim=0).t(), increments, open_


def _thermometric_mask_backward(grad: torch.Tensor, increments: torch.Tensor, open_: torch.Tensor) -> torch.Tensor:
    """The gradient of ``alpha`` from its mask's gradient ``grad`` ``[C, K]``."""
    if native_kernels.applies(increments):  # autograd hands the gradient in the mask's dtype and device
        return native_kernels.thermometric_mask_backward(grad, increments, open_)
    columns = grad.t()
    grad_nested = columns[:-1] - columns[1:]
    if len(open_) == 1:
        grad_prefix = grad_nested
    else:
        grad_prefix = torch.empty_like(grad_nested)
        for i in range(len(open_)):
            # prod_{l <= j, l != i} (1 - b_l) for j = i, i + 1, ...: the other factors accumulated.
            others = open_[:i].prod(0) if i else torch.ones_like(open_[0])
            total = grad_nested[i] * others
            for j in range(i + 1, len(open_)):
                others = others * open_[j]
                total = total + grad_nested[j] * others
            grad_prefix[i] = total
    return grad_prefix.cumsum(1).mul_(increments)


class SoftmaxAssignment(Assignment):
    """Per-channel logits over units; softmax (optionally Gumbel) with an annealed temperature.
    ``init="random"`` draws every channel's unit independently (the thermometric parametrization,
    contiguous by construction, draws a random contiguous split)."""

    def __init__(self, channels: int, units: int, init: str | Sequence[int] = "first", hard: bool = True,
                 gumbel: bool = False, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(channels, units)
        if init == "random":  # per channel, not a contiguous block
            winners = torch.randint(0, units, (channels,), generator=generator)
        else:
            winners = contiguous_mask(initial_counts(channels, units, init, generator)).argmax(dim=1)
        # Each channel's winning logit a little different: under a cost gradient every channel of a
        # unit gets the same gradient, and equal margins would flip all of them in the same step
        # (the search then oscillated at 6x the optimum on a three-unit SoC).
        margin = 1.0 + INIT_MARGIN_SPREAD * torch.rand(channels, 1, generator=generator)
        self.alpha = nn.Parameter(F.one_hot(winners, units).float() * margin)
        self.hard = hard
        self.gumbel = gumbel
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def set_temperature(self, temperature: float) -> None:
        self.temperature.fill_(float(temperature))

    def mask(self) -> torch.Tensor:
        logits = self.alpha
        if self.gumbel and self.training:
            uniform = torch.rand_like(logits).clamp(1e-10, 1.0 - 1e-10)
            logits = logits - torch.log(-torch.log(uniform))
        soft = torch.softmax(logits / self.temperature, dim=1)
        if not self.hard:
            return soft
        hard = F.one_hot(soft.argmax(dim=1), self.units).to(soft.dtype)
        return straight_through(hard, soft)

    def hard_assignment(self) -> torch.Tensor:
        with torch.no_grad():
            return self.alpha.argmax(dim=1)


PARAMETRIZATIONS = dict(zip(PARAMETRIZATION_NAMES, (ThermometricAssignment, SoftmaxAssignment)))


def make_assignment(parametrization: str, channels: int, units: int, init: str | Sequence[int],
                    generator: torch.Generator | None = None, **options: object) -> Assignment:
    """Build an assignment by parametrization name (``thermometric`` or ``softmax``)."""
    if parametrization not in PARAMETRIZATIONS:
        raise UsageError(f"unknown parametrization {parametrization!r}; choose one of "
                         f"{', '.join(PARAMETRIZATIONS)}")
    return PARAMETRIZATIONS[parametrization](channels, units, init=init, generator=generator, **options)
