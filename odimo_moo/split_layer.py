"""A searched Conv2d/Linear whose output channels are split among compute units."""

from __future__ import annotations

import enum
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from .alternatives import Alternative, run_dense, run_dense_quantized
from .assignment import Assignment, contiguous_mask
from .layer_spec import LayerSpec
from .quantizers import freeze
from .weight_mix import WeightMixture, mixed_weight, weight_mixture
from .weight_quantizers import IntegerWeight


class MaskMode(enum.Enum):
    """Where a split layer's channel-to-unit mask comes from."""

    SEARCH = "search"  # the trainable assignment
    SAMPLE = "sample"  # a fresh random split at every forward (warmup)
    FIXED = "fixed"  # a frozen mapping (fine-tune, one-shot evaluation of a given mapping)


class SplitLayer(nn.Module):
    """Mixes, per output channel, the outputs of every unit's alternative of one layer.

    ``y[:, c] = sum_k m[c, k] * alt_k(q_k(x))[:, c]``. When all units read the same input format
    (``fold``), this is computed as ONE op over the mixed weights ``sum_k m[c, k] * W_k[c]``.
    The wrapped ``layer`` keeps the original op's configuration and the shared weight and bias.
    """

    def __init__(self, layer: nn.Module, spec: LayerSpec, unit_indices: Sequence[int],
                 alternatives: Sequence[Alternative], input_quantizers: Sequence[nn.Module],
                 assignment: Assignment, fold: bool, contiguous_sampling: bool) -> None:
        super().__init__()
        self.layer = layer
        self.spec = spec
        self.alternatives = nn.ModuleList(alternatives)
        self.input_quantizers = nn.ModuleList(input_quantizers[:1] if fold else input_quantizers)
        self.assignment = assignment
        self.fold = fold
        self.contiguous_sampling = contiguous_sampling
        self.mode = MaskMode.SEARCH
        self.register_buffer("unit_indices", torch.tensor(list(unit_indices), dtype=torch.long))
        self.register_buffer("fixed_units", torch.zeros(spec.out_channels, dtype=torch.long))
        self._term_units, merge = _shared_terms(self.alternatives)
        # [K, T]: unit k's mask column goes to weight term t (units sharing a term add up); None: one term per unit.
        self.register_buffer("term_merge", merge if fold else None, persistent=False)
        # Channel counts of the last search-mode forward's mask (see ``channel_counts``).
        self._forward_counts: tuple[torch.Tensor, tuple[int, ...]] | None = None
        # The next search-mode forward's mask and counts, when computed with other layers' (``give_search_mask``).
        self._given_mask: tuple[torch.Tensor, torch.Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The cached masks and counts are part of an autograd graph: never copied, pickled or deep-copied.
        state = self.__dict__.copy()
        state["_forward_counts"] = state["_given_mask"] = None
        return state

    @property
    def channels(self) -> int:
        return self.spec.out_channels

    @property
    def num_units(self) -> int:
        return len(self.alternatives)

    def set_mode(self, mode: MaskMode) -> None:
        self.mode = mode
        self._forward_counts = self._given_mask = None

    def fix(self, units_of_channels: torch.Tensor) -> None:
        """Freeze the mapping: ``units_of_channels[c]`` is the local unit index of channel ``c``."""
        if units_of_channels.shape != (self.channels,):
            raise ValueError(f"expected {self.channels} unit indices, got shape {tuple(units_of_channels.shape)}")
        if int(units_of_channels.min()) < 0 or int(units_of_channels.max()) >= self.num_units:
            raise ValueError(f"unit indices must be in [0, {self.num_units})")
        self.fixed_units.copy_(units_of_channels.to(self.fixed_units.device))
        self.mode = MaskMode.FIXED
        self._forward_counts = self._given_mask = None

    def sampled_mask(self) -> torch.Tensor:
        device = self.fixed_units.device
        if self.contiguous_sampling:
            cuts = torch.randint(0, self.channels + 1, (self.num_units - 1,), device=device).sort().values
            bounds = torch.cat([cuts.new_zeros(1), cuts, cuts.new_full((1,), self.channels)])
            return contiguous_mask(torch.diff(bounds).tolist(), device=device)
        units = torch.randint(0, self.num_units, (self.channels,), device=device)
        return nn.functional.one_hot(units, self.num_units).float()

    def mask(self) -> torch.Tensor:
        """The ``[C, K]`` mask of the current mode."""
        if self.mode is MaskMode.SEARCH:
            return self.assignment.mask()
        if self.mode is MaskMode.SAMPLE:
            return self.sampled_mask()
        return nn.functional.one_hot(self.fixed_units, self.num_units).float()

    def units_of_channels(self) -> torch.Tensor:
        """Local unit index of each channel under the current (noise-free) mapping."""
        if self.mode is MaskMode.FIXED:
            return self.fixed_units.clone()
        return self.assignment.hard_assignment()

    def channel_counts(self) -> torch.Tensor:
        """Channels per local unit ``[K]``, differentiable w.r.t. the assignment in search mode.

        In search mode the counts of the mask the last forward used are handed out once (the cost
        of a training step then costs no second mask evaluation) when that mask is still current:
        no assignment parameter or buffer changed since, no backward went through it yet, and it
        carries gradient if gradient is needed now. Otherwise the mask is computed afresh.
        """
        if self.mode is MaskMode.SEARCH:
            counts = self._take_forward_counts()
            return counts if counts is not None else self.assignment.mask().sum(dim=0)
        return torch.bincount(self.units_of_channels(), minlength=self.num_units).float()

    def _assignment_state(self) -> tuple[int, ...]:
        tensors = list(self.assignment.parameters()) + list(self.assignment.buffers())
        return tuple(t._version for t in tensors)

    def _remember_forward_counts(self, mask: torch.Tensor, given_counts: torch.Tensor | None) -> None:
        if torch.is_inference_mode_enabled():
            self._forward_counts = None
            return
        counts = given_counts
        if counts is None:
            counts = mask.sum(dim=0)
            if mask.requires_grad:
                # A backward through the forward's graph frees the mask's saved tensors: forget then.
                mask.register_hook(self.forget_forward_counts)
        self._forward_counts = (counts, self._assignment_state())

    def forget_forward_counts(self, grad: torch.Tensor | None = None) -> None:
        """Drop the counts the last search-mode forward left for :meth:`channel_counts` (a backward ran
        through the graph that computed them; ``grad``: the hook's argument, unused)."""
        self._forward_counts = None

    def give_search_mask(self, mask: torch.Tensor, counts: torch.Tensor) -> None:
        """Hand the next search-mode forward its mask (this layer's :meth:`mask`) and the mask's channel
        counts, computed with other layers' in one node by their owner, which clears it after that
        forward (:meth:`take_given_mask`) and calls :meth:`forget_forward_counts` when a backward runs
        through the node."""
        self._given_mask = (mask, counts)

    def take_given_mask(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The mask and counts :meth:`give_search_mask` handed over and no forward used yet (cleared)."""
        given, self._given_mask = self._given_mask, None
        return given

    def _take_forward_counts(self) -> torch.Tensor | None:
        cached, self._forward_counts = self._forward_counts, None
        if cached is None or torch.is_inference_mode_enabled():
            return None
        counts, state = cached
        if state != self._assignment_state():
            return None
        if torch.is_grad_enabled() and not counts.requires_grad and any(
                p.requires_grad for p in self.assignment.parameters()):
            return None
        return counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        given = self.take_given_mask() if self.mode is MaskMode.SEARCH else None
        mask = (self.mask() if given is None else given[0]).to(x.dtype)
        if self.mode is MaskMode.SEARCH:
            self._remember_forward_counts(mask, None if given is None else given[1].to(x.dtype))
        weight, bias = self.layer.weight, self.layer.bias
        if self.fold:
            # ONE op over the per-channel mixture of the units' weights (quantizing the input, the
            # op and its backward in one autograd node when the input format allows).
            return run_dense_quantized(self.layer, x, self.input_quantizers[0], self.weight_mixture(mask), bias)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        output = 0
        for k, (alt, quantizer) in enumerate(zip(self.alternatives, self.input_quantizers)):
            branch = run_dense(self.layer, quantizer(x), alt.dense_weight(weight), bias)
            output = output + mask[:, k].view(shape) * branch
        return output

    def folded_weight(self, mask: torch.Tensor) -> torch.Tensor:
        """The weight the folded forward runs under ``mask`` ``[C, K]``: every unit's quantized weight
        mixed per output channel (:func:`odimo_moo.weight_mix.mix_weights`; units that share a weight
        term add their mask columns). Folded layers only."""
        return mixed_weight(self.weight_mixture(mask))

    def weight_mixture(self, mask: torch.Tensor) -> WeightMixture:
        """:meth:`folded_weight` before it is computed (the fused quantized op mixes it in its own node)."""
        if not self.fold:
            raise ValueError("a layer that runs every unit's branch has no folded weight")
        weight = self.layer.weight
        terms = [self.alternatives[k].weight_term(weight) for k in self._term_units]
        if self.term_merge is not None:
            mask = mask @ self.term_merge.to(mask.dtype)
        return weight_mixture(mask, terms, weight.shape)

    @torch.no_grad()
    def export(self) -> "ExportedSplit":
        """Plain per-unit sub-layers holding exactly their channels, under the current hard mapping."""
        units = self.units_of_channels()
        branches, order = [], []
        for k, alt in enumerate(self.alternatives):
            channels = torch.nonzero(units == k).flatten()
            if channels.numel() == 0:
                continue
            sub = alt.export(self.layer, self.layer.weight, self.layer.bias, channels)
            quantizer = freeze(self.input_quantizers[0 if self.fold else k])
            weight = alt.export_integer_weight(self.layer.weight, channels)
            if weight is None and not isinstance(alt.weight_quantizer, nn.Identity):
                weight_format = "unknown"
            else:
                weight_format = "float" if weight is None else weight.kind
            branches.append(ExportedBranch(int(self.unit_indices[k]), quantizer, sub, channels, weight_format,
                                           weight))
            order.append(channels)
        permutation = torch.cat(order)
        inverse = torch.empty_like(permutation)
        inverse[permutation] = torch.arange(permutation.numel(), device=permutation.device)
        return ExportedSplit(branches, inverse)


def _shared_terms(alternatives: Sequence[Alternative]) -> tuple[list[int], torch.Tensor | None]:
    """The units whose weight term the folded forward computes (the first of each group of units that
    share one, :meth:`Alternative.shares_term_with`), and the ``[K, T]`` 0/1 matrix sending each unit's
    mask column to its term (None when no two units share one)."""
    representatives: list[int] = []
    term_of_unit = []
    for k, alternative in enumerate(alternatives):
        shared = next((t for t, r in enumerate(representatives) if alternatives[r].shares_term_with(alternative)), None)
        if shared is None:
            shared = len(representatives)
            representatives.append(k)
        term_of_unit.append(shared)
    if len(representatives) == len(alternatives):
        return representatives, None
    return representatives, nn.functional.one_hot(torch.tensor(term_of_unit), len(representatives)).float()


class ExportedBranch(nn.Module):
    """One unit's share of an exported layer: its input format, then its sub-layer.

    Also records, for integer exports, which output channels of the layer it produces
    (``output_channels``, in its output order) and its weight format: ``weight_format`` is
    ``"float"``, ``"int"`` (``weight_bits``-bit levels times the 0-d power-of-two ``weight_scale``),
    ``"ternary"`` (levels in ``{-1, 0, +1}`` times the per-output-channel ``weight_scale``) or
    ``"unknown"`` (a plugin's alternative that does not describe its quantized weight).
    """

    def __init__(self, unit_index: int, input_quantizer: nn.Module, layer: nn.Module,
                 output_channels: torch.Tensor | None = None, weight_format: str = "unknown",
                 weight: IntegerWeight | None = None) -> None:
        super().__init__()
        self.unit_index = unit_index
        self.input_quantizer = input_quantizer
        self.layer = layer
        self.weight_format = weight_format
        self.weight_bits = None if weight is None else weight.bits
        self.register_buffer("output_channels", None if output_channels is None else output_channels.clone().long())
        self.register_buffer("weight_scale", None if weight is None else weight.scale.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.input_quantizer(x))


class ExportedSplit(nn.Module):
    """Concatenates the branches' channels and permutes them back to the layer's channel order."""

    def __init__(self, branches: Sequence[ExportedBranch], inverse_permutation: torch.Tensor) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        contiguous = bool(torch.equal(inverse_permutation, torch.arange(inverse_permutation.numel(),
                                                                        device=inverse_permutation.device)))
        self.needs_permutation = not contiguous
        self.register_buffer("inverse_permutation", inverse_permutation.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.branches]
        y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
        if self.needs_permutation:
            y = y.index_select(1, self.inverse_permutation)
        return y


def exported_branches(network: nn.Module) -> Iterator[tuple[str, int, ExportedBranch]]:
    """Every per-unit sub-layer of an exported network (``ODiMO.export()``, or ``exported.pt`` loaded
    with ``torch.load(..., weights_only=False)``): ``(layer, index, branch)`` per sub-layer.

    ``layer`` is the searched (or, trained as deployed, fixed) layer's module name, as in
    ``mapping.json``; ``index`` the sub-layer's place in the layer's concatenation. Of the
    :class:`ExportedBranch`: ``unit_index`` (the unit, in the SoC's order: ``soc.units[unit_index]``,
    mapping.json's ``units``), ``output_channels`` (the layer's output channels it computes, in its
    output order), ``layer`` (the Conv2d/Linear; ``Sequential(ChannelSelect, Conv2d)`` for a depthwise
    unit, which reads only its channels' inputs), ``input_quantizer`` (the unit's frozen input grid),
    ``weight_format``, ``weight_bits`` and ``weight_scale``. Layers in network order, sub-layers in
    concatenation order.
    """
    for name, module in network.named_modules():
        if isinstance(module, ExportedSplit):
            for index, branch in enumerate(module.branches):
                yield name, index, branch
