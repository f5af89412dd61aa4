"""Whole-network mappings as integer genomes (for evolutionary and random mapping search).

A *genome* is a flat integer vector holding, for every searched layer in model order, one gene per
SoC unit: the number of that layer's output channels the unit produces (:class:`GenomeLayout`).
:func:`repair_genome` turns any vector into a valid one, :func:`random_genomes` draws uniform random
splits, :func:`genome_to_counts` gives the counts :meth:`odimo_moo.searchable.ODiMO.force_counts` takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import torch

from .errors import UsageError

if TYPE_CHECKING:
    from .searchable import ODiMO


@dataclass(frozen=True)
class GenomeLayout:
    """Layout of a whole-network mapping as a flat integer vector.

    For every searched layer (``names``, in model order) there are ``len(unit_names)`` genes, one per
    SoC unit: the channels of that layer the unit produces. ``allowed[l][k]`` says whether layer ``l``
    may use unit ``k``; a valid genome has zeros where it may not and each layer's genes add up to
    ``channels[l]``.
    """

    names: tuple[str, ...]
    channels: tuple[int, ...]
    allowed: tuple[tuple[bool, ...], ...]
    unit_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.channels) == len(self.allowed)):
            raise UsageError("genome layout: names, channels and allowed units must have one entry per layer")
        for name, row in zip(self.names, self.allowed):
            if len(row) != len(self.unit_names) or not any(row):
                raise UsageError(f"genome layout: layer {name!r} must allow at least one of "
                                 f"{len(self.unit_names)} units")

    @classmethod
    def from_model(cls, model: "ODiMO") -> "GenomeLayout":
        allowed = []
        for name in model.split_names:
            usable = set(model.split_layer(name).unit_indices.tolist())
            allowed.append(tuple(k in usable for k in range(len(model.soc.units))))
        return cls(tuple(model.split_names), tuple(model.split_layer(n).channels for n in model.split_names),
                   tuple(allowed), model.soc.unit_names)

    @property
    def num_layers(self) -> int:
        return len(self.names)

    @property
    def num_units(self) -> int:
        return len(self.unit_names)

    @property
    def size(self) -> int:
        return self.num_layers * self.num_units

    def allowed_tensor(self) -> torch.Tensor:
        return torch.tensor(self.allowed, dtype=torch.bool).view(self.num_layers, self.num_units)

    def channels_tensor(self) -> torch.Tensor:
        return torch.tensor(self.channels, dtype=torch.long)


def repair_genome(genome: torch.Tensor | np.ndarray | Sequence, layout: GenomeLayout) -> torch.Tensor:
    """Make genomes valid: integer, >= 0, zero on units a layer cannot use, each layer adding up to
    its channel count.

    ``genome`` has shape ``[..., layout.size]``; the result has the same shape (int64). Genes are
    rounded and clipped to ``[0, C]``, a layer with no channel left on any usable unit is split
    evenly, and the counts are rescaled to add up to C by the largest-remainder method (in exact
    integer arithmetic; ties go to the lower unit index). A valid genome is returned unchanged.
    """
    values = torch.as_tensor(np.asarray(genome, dtype=np.float64))
    if values.shape[-1:] != (layout.size,):
        raise UsageError(f"a genome of this model has {layout.size} genes ({layout.num_layers} layers x "
                         f"{layout.num_units} units), got shape {tuple(values.shape)}")
    if not bool(torch.isfinite(values).all()):
        raise UsageError("genome holds NaN or infinite genes")
    shape = values.shape
    allowed = layout.allowed_tensor()
    channels = layout.channels_tensor().view(layout.num_layers, 1)
    genes = torch.round(values).long().view(-1, layout.num_layers, layout.num_units)
    genes = torch.minimum(genes.clamp(min=0), channels) * allowed
    total = genes.sum(dim=-1, keepdim=True)
    genes = torch.where(total == 0, allowed.long().expand_as(genes), genes)
    total = genes.sum(dim=-1, keepdim=True)
    scaled = genes * channels
    repaired = scaled // total
    remainder = scaled % total
    deficit = channels.view(1, -1) - repaired.sum(dim=-1)
    order = torch.argsort(-remainder, dim=-1, stable=True)
    rank = torch.argsort(order, dim=-1, stable=True)
    repaired = repaired + (rank < deficit.unsqueeze(-1)).long()
    return repaired.view(shape)


def random_genomes(layout: GenomeLayout, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` genomes, each layer split at uniform random cut points among its usable units
    (for two units: every split 0..C equally likely), ``[count, layout.size]``."""
    genomes = torch.zeros(count, layout.num_layers, layout.num_units, dtype=torch.long)
    allowed = layout.allowed_tensor()
    for layer, channels in enumerate(layout.channels):
        usable = torch.nonzero(allowed[layer]).flatten()
        cuts = torch.randint(0, channels + 1, (count, usable.numel() - 1), generator=generator).sort(dim=1).values
        edges = torch.cat([torch.zeros(count, 1, dtype=torch.long), cuts,
                           torch.full((count, 1), channels, dtype=torch.long)], dim=1)
        genomes[:, layer, usable] = torch.diff(edges, dim=1)
    return genomes.view(count, layout.size)


def genome_to_counts(model: "ODiMO", genome: torch.Tensor | np.ndarray | Sequence) -> dict[str, list[int]]:
    """Per searched layer, channels on each of the layer's own units in order (what
    :meth:`~odimo_moo.searchable.ODiMO.force_counts` takes) from one valid genome."""
    layout = GenomeLayout.from_model(model)
    genes = torch.as_tensor(np.asarray(genome)).long()
    if genes.shape != (layout.size,) or not torch.equal(repair_genome(genes, layout), genes):
        raise UsageError(f"not a valid genome for this model ({layout.size} non-negative integer genes, "
                         f"each layer's adding up to its channels); repair it with repair_genome first")
    per_layer = genes.view(layout.num_layers, layout.num_units)
    return {name: per_layer[l, model.split_layer(name).unit_indices.cpu()].tolist()
            for l, name in enumerate(layout.names)}


def counts_to_genome(model: "ODiMO", counts: Mapping[str, Sequence[int]]) -> torch.Tensor:
    """The genome of per-layer counts given on each layer's own units (the inverse of
    :func:`genome_to_counts`); every searched layer must be given."""
    layout = GenomeLayout.from_model(model)
    missing = set(layout.names) - set(counts)
    if missing:
        raise UsageError(f"counts miss searched layer(s) {', '.join(sorted(missing))}")
    genome = torch.zeros(layout.num_layers, layout.num_units, dtype=torch.long)
    for l, name in enumerate(layout.names):
        layer = model.split_layer(name)
        genome[l, layer.unit_indices.cpu()] = torch.tensor(list(counts[name]), dtype=torch.long)
    return genome.view(-1)
