"""The op a compute unit runs for a searched layer.

During the search every alternative produces all C output channels; the split layer mixes them
per channel. Each alternative can express itself as a weight in the searched layer's own shape
(``dense_weight``), so a layer whose units read the same input format runs ONE convolution over the
per-channel mixture of weights. At export, an alternative builds a plain sub-layer that computes
just its channels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn


class Alternative(nn.Module, ABC):
    """One unit's version of a searched Conv2d/Linear layer."""

    def __init__(self, weight_quantizer: nn.Module) -> None:
        super().__init__()
        self.weight_quantizer = weight_quantizer

    @abstractmethod
    def dense_weight(self, shared_weight: torch.Tensor) -> torch.Tensor:
        """This alternative's quantized weight, in the shape of the searched layer's weight."""

    def mix_into(self, mixed: torch.Tensor | None, channel_mask: torch.Tensor,
                 shared_weight: torch.Tensor) -> torch.Tensor:
        """``mixed + channel_mask[c] * dense_weight(shared_weight)[c]`` for every output channel ``c``.

        ``mixed`` is ``None`` for the first unit. The folded forward builds the per-channel mixture of
        weights unit by unit with this; alternatives whose dense weight is mostly zeros (a depthwise
        kernel on the diagonal) override it to touch only their non-zero entries.
        """
        term = _per_channel(channel_mask, shared_weight) * self.dense_weight(shared_weight)
        return term if mixed is None else mixed + term

    @abstractmethod
    def export(self, source: nn.Module, shared_weight: torch.Tensor, bias: torch.Tensor | None,
               channels: torch.Tensor) -> nn.Module:
        """A plain module mapping the layer's full input to output ``channels`` (in that order)."""


def _per_channel(channel_mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``channel_mask`` ``[C]`` shaped to broadcast over a weight ``[C, ...]``."""
    return channel_mask.view((-1,) + (1,) * (weight.dim() - 1))


class AlternativeFactory(ABC):
    """Builds a unit's alternative for one searched layer."""

    @abstractmethod
    def build(self, source: nn.Module, weight_quantizer: nn.Module) -> Alternative:
        """The alternative for ``source`` (a Conv2d or Linear) in the unit's weight format."""


def _conv_like(source: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None,
               channels: torch.Tensor) -> nn.Module:
    """A Conv2d/Linear configured like ``source`` computing output ``channels`` with ``weight``/``bias``.

    Depthwise sources also select their input channels; other grouped convs are never searched.
    """
    count = int(channels.numel())
    if isinstance(source, nn.Linear):
        layer: nn.Module = nn.Linear(source.in_features, count, bias=bias is not None)
    else:
        depthwise = source.groups > 1
        layer = nn.Conv2d(count if depthwise else source.in_channels, count, source.kernel_size,
                          source.stride, source.padding, source.dilation, groups=count if depthwise else 1,
                          bias=bias is not None, padding_mode=source.padding_mode)
    layer.weight.data.copy_(weight)
    if bias is not None:
        layer.bias.data.copy_(bias)
    if isinstance(source, nn.Conv2d) and source.groups > 1:
        return nn.Sequential(ChannelSelect(channels), layer)
    return layer


class SameOp(AlternativeFactory):
    """The searched layer's own op, with the unit's weight quantizer on the shared weight."""

    def build(self, source: nn.Module, weight_quantizer: nn.Module) -> Alternative:
        return SameOpAlternative(weight_quantizer)


class SameOpAlternative(Alternative):
    def dense_weight(self, shared_weight: torch.Tensor) -> torch.Tensor:
        return self.weight_quantizer(shared_weight)

    @torch.no_grad()
    def export(self, source: nn.Module, shared_weight: torch.Tensor, bias: torch.Tensor | None,
               channels: torch.Tensor) -> nn.Module:
        weight = self.dense_weight(shared_weight)[channels]
        sub_bias = None if bias is None else bias[channels]
        return _conv_like(source, weight, sub_bias, channels)


class Depthwise(AlternativeFactory):
    """A depthwise conv with the searched layer's kernel, stride and padding (needs Cin == Cout)."""

    def build(self, source: nn.Module, weight_quantizer: nn.Module) -> Alternative:
        if not isinstance(source, nn.Conv2d) or source.in_channels != source.out_channels or source.groups != 1:
            raise ValueError("a depthwise alternative needs a Conv2d with groups=1 and in_channels == out_channels")
        return DepthwiseAlternative(source, weight_quantizer)


class DepthwiseAlternative(Alternative):
    """Own per-channel kernels, initialised from the diagonal of the searched conv's weight."""

    def __init__(self, source: nn.Conv2d, weight_quantizer: nn.Module) -> None:
        super().__init__(weight_quantizer)
        channels = source.out_channels
        diagonal = source.weight.detach()[torch.arange(channels), torch.arange(channels)]
        self.weight = nn.Parameter(diagonal.unsqueeze(1).clone())
        self.register_buffer("diagonal_index", torch.arange(channels), persistent=False)

    def dense_weight(self, shared_weight: torch.Tensor) -> torch.Tensor:
        dense = shared_weight.new_zeros(shared_weight.shape)
        dense[self.diagonal_index, self.diagonal_index] = self.weight_quantizer(self.weight)[:, 0]
        return dense

    def mix_into(self, mixed: torch.Tensor | None, channel_mask: torch.Tensor,
                 shared_weight: torch.Tensor) -> torch.Tensor:
        # Only the diagonal [c, c] is non-zero: add the masked depthwise kernels there instead of
        # building (and mixing) a dense [C, C, kh, kw] tensor of zeros.
        kernels = self.weight_quantizer(self.weight)[:, 0]
        if mixed is None:
            mixed = shared_weight.new_zeros(shared_weight.shape)
        index = (self.diagonal_index, self.diagonal_index)
        return mixed.index_put(index, _per_channel(channel_mask, kernels) * kernels, accumulate=True)

    @torch.no_grad()
    def export(self, source: nn.Module, shared_weight: torch.Tensor, bias: torch.Tensor | None,
               channels: torch.Tensor) -> nn.Module:
        count = int(channels.numel())
        conv = nn.Conv2d(count, count, source.kernel_size, source.stride, source.padding, source.dilation,
                         groups=count, bias=bias is not None, padding_mode=source.padding_mode)
        conv.weight.copy_(self.weight_quantizer(self.weight)[channels])
        if bias is not None:
            conv.bias.copy_(bias[channels])
        return nn.Sequential(ChannelSelect(channels), conv)


class ChannelSelect(nn.Module):
    """Keeps input channels ``channels`` (dimension 1), in that order."""

    def __init__(self, channels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("channels", channels.clone().long())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.channels)


def run_dense(source: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Apply ``source``'s op (Conv2d or Linear configuration) with another weight and bias."""
    if isinstance(source, nn.Linear):
        return F.linear(x, weight, bias)
    if source.padding_mode != "zeros":
        x = F.pad(x, source._reversed_padding_repeated_twice, mode=source.padding_mode)
        return F.conv2d(x, weight, bias, source.stride, 0, source.dilation, source.groups)
    return F.conv2d(x, weight, bias, source.stride, source.padding, source.dilation, source.groups)
