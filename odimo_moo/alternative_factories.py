"""What a compute unit runs for a searched layer, named without torch.

A unit's ``alternative(spec)`` returns one of these factories; the searchable layer calls its
``build`` to get the torch module (:mod:`odimo_moo.alternatives`, imported then). Keeping the
factories apart lets a SoC plugin say what its units run without importing torch, so listing the
registered SoCs (``odimo plugins``) stays fast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from .alternatives import Alternative


class AlternativeFactory(ABC):
    """Builds a unit's alternative for one searched layer."""

    @abstractmethod
    def build(self, source: nn.Module, weight_quantizer: nn.Module) -> Alternative:
        """The alternative for ``source`` (a Conv2d or Linear) in the unit's weight format."""


class SameOp(AlternativeFactory):
    """The searched layer's own op, with the unit's weight quantizer on the shared weight."""

    def build(self, source: nn.Module, weight_quantizer: nn.Module) -> Alternative:
        from .alternatives import SameOpAlternative

        return SameOpAlternative(weight_quantizer)


class Depthwise(AlternativeFactory):
    """A depthwise conv with the searched layer's kernel, stride and padding (needs Cin == Cout)."""

    def build(self, source: nn.Module, weight_quantizer: nn.Module) -> Alternative:
        from torch import nn

        from .alternatives import DepthwiseAlternative

        if not isinstance(source, nn.Conv2d) or source.in_channels != source.out_channels or source.groups != 1:
            raise ValueError("a depthwise alternative needs a Conv2d with groups=1 and in_channels == out_channels")
        return DepthwiseAlternative(source, weight_quantizer)
