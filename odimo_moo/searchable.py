"""Searchable models: any ``nn.Module`` traced with torch.fx, its splittable layers replaced by
:class:`~odimo_moo.split_layer.SplitLayer` over the SoC's compute units.

``ODiMO(model, soc, input_shape)`` follows PLiNIO's shape: ``.cost``, ``nas_parameters()``,
``net_parameters()``, ``export()``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .assignment import SoftmaxAssignment, ThermometricAssignment, make_assignment, thermometric_masks
from .deploy import FixedQuantizedLayer, fold_batchnorm, round_biases
from .discrete_cost import CostTables, discrete_layer_cost, searched_layers_cost
from .errors import UsageError
from .front_point import COST_METRICS
from .graph_patterns import input_is_non_negative, output_size
from .layer_spec import LayerSpec, LayerTable
from .data_formats import FLOAT
from .registry import resolve_soc
from .soc import SoC
from .split_layer import MaskMode, SplitLayer


@dataclass(frozen=True)
class FixedLayer:
    """A layer that is not searched, costed with all its channels on one unit."""

    name: str
    spec: LayerSpec
    unit: int


class ODiMO(nn.Module):
    """A model whose splittable layers learn which compute unit produces each output channel.

    Args:
        model: any fx-traceable ``nn.Module`` (copied; the original is left untouched).
        soc: the target SoC (the object, its registry entry or its registered name, e.g. ``"diana"``);
            its units decide which layers are split and what each runs.
        input_shape: shape of one input without the batch dimension, e.g. ``(3, 32, 32)``.
        parametrization: ``"thermometric"`` (contiguous ranges) or ``"softmax"`` (per channel).
        init: ``"first"`` / ``"balanced"`` / ``"random"``, or a unit name to put every channel there.
        metric: the default cost of :attr:`cost` (``"latency"`` cycles or ``"energy"`` microjoules).
        quantize: use each unit's data format (False: float everywhere).
        deploy_format: run the layers that are not searched in their unit's data format too (with
            ``quantize``), so that with BatchNorm folded (:meth:`fold_batchnorm`) the network
            computes what its integer export does.
        exclude: layer names (fx qualified names) or module types never to split.
        fold: run one op over mixed weights when the units' input formats agree
            (``None``: whenever possible; ``False``: always run every unit's branch).
        seed: seeds the random init.
        assignment_options: extra options of the parametrization (e.g. ``gumbel``, ``temperature``).
    """

    def __init__(self, model: nn.Module, soc: SoC | str, input_shape: Sequence[int], *,
                 parametrization: str = "thermometric", init: str = "first", metric: str = "latency",
                 quantize: bool = True, exclude: Sequence[str | type] = (), fold: bool | None = None,
                 seed: int = 0, assignment_options: Mapping[str, Any] | None = None,
                 deploy_format: bool = False) -> None:
        super().__init__()
        if metric not in COST_METRICS:
            raise UsageError(f"unknown metric {metric!r}; choose one of {', '.join(COST_METRICS)}")
        self.soc = soc = resolve_soc(soc)
        self.metric = metric
        self.input_shape = tuple(int(d) for d in input_shape)
        generator = torch.Generator().manual_seed(seed)
        graph_module = self._trace(model)
        self.split_names: list[str] = []
        self.fixed_layers: list[FixedLayer] = []
        #: Fixed layers run in their unit's data format (``deploy_format``).
        self.quantized_fixed_names: list[str] = []
        modules = dict(graph_module.named_modules())
        for node, module, spec, name, searched in self._candidate_layers(graph_module, exclude):
            non_negative = input_is_non_negative(node, modules)
            if not searched:
                unit = soc.fixed_unit(spec)
                self.fixed_layers.append(FixedLayer(name, spec, unit))
                if deploy_format and quantize:
                    graph_module.add_submodule(name, FixedQuantizedLayer(module, unit, soc.units[unit].data_format,
                                                                         non_negative))
                    self.quantized_fixed_names.append(name)
                continue
            split = self._make_split(module, spec, soc.supporting_units(spec), non_negative, parametrization,
                                     init, quantize, fold, generator, assignment_options or {})
            graph_module.add_submodule(name, split)
            self.split_names.append(name)
        graph_module.recompile()
        self.model = graph_module
        split_table = LayerTable.from_specs([self.split_layer(n).spec for n in self.split_names])
        allowed = [self.split_layer(n).unit_indices.tolist() for n in self.split_names]
        # Every unit's cycles at every channel count of every split layer (moves with .to(device)).
        self.register_buffer("_cost_times", CostTables.compute_times(soc, split_table, allowed), persistent=False)
        self.register_buffer("_count_index", self._unit_count_index(), persistent=False)
        self._layer_units = [self.split_layer(n).unit_indices.tolist() for n in self.split_names]
        self._tables = CostTables(soc, self._cost_times)
        self._fixed_costs = self._cost_of_fixed_layers()
        self._reference_costs = self._cost_on_default_units()

    def _trace(self, model: nn.Module) -> fx.GraphModule:
        """``model`` (copied) traced with torch.fx, every node's output shape recorded."""
        graph_module = fx.symbolic_trace(copy.deepcopy(model))
        was_training = graph_module.training
        graph_module.eval()
        try:
            with torch.no_grad():
                ShapeProp(graph_module).propagate(torch.zeros((1,) + self.input_shape))
        except Exception as exc:
            raise UsageError(f"{type(model).__name__} cannot run on inputs of shape {self.input_shape}: "
                             f"{str(exc).splitlines()[0]}") from exc
        graph_module.train(was_training)
        return graph_module

    def _candidate_layers(self, graph_module: fx.GraphModule, exclude: Sequence[str | type]
                          ) -> list[tuple[fx.Node, nn.Module, LayerSpec, str, bool]]:
        """Every Conv2d/Linear call: (node, module, spec, name, whether it is searched)."""
        modules = dict(graph_module.named_modules())
        excluded_names = {e for e in exclude if isinstance(e, str)}
        excluded_types = tuple(e for e in exclude if isinstance(e, type))
        unknown = excluded_names - set(modules)
        if unknown:
            raise UsageError(f"cannot exclude unknown layer(s) {', '.join(sorted(unknown))}; "
                             f"layer names look like {', '.join(list(modules)[1:4])}")
        layers = []
        for node in graph_module.graph.nodes:
            module = modules.get(str(node.target)) if node.op == "call_module" else None
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            name = str(node.target)
            spec = LayerSpec.from_module(module, output_size(node))
            splittable = len(self.soc.supporting_units(spec)) >= 2 and (spec.groups == 1 or spec.is_depthwise)
            searched = splittable and name not in excluded_names and not isinstance(module, excluded_types)
            layers.append((node, module, spec, name, searched))
        return layers

    def _make_split(self, module: nn.Module, spec: LayerSpec, units: Sequence[int], non_negative: bool,
                    parametrization: str, init: str, quantize: bool, fold: bool | None,
                    generator: torch.Generator, options: Mapping[str, Any]) -> SplitLayer:
        soc_units = [self.soc.units[i] for i in units]
        formats = [u.data_format if quantize else FLOAT for u in soc_units]
        alternatives = [u.alternative(spec).build(module, f.weight_quantizer(spec.out_channels))
                        for u, f in zip(soc_units, formats)]
        input_quantizers = [f.activation_quantizer(signed=not non_negative) for f in formats]
        same_input = len({f.activation_bits for f in formats}) == 1
        if fold and not same_input:
            raise UsageError(f"cannot fold layer {spec.describe()}: its units read different input formats")
        if init in self.soc.unit_names:
            counts = [spec.out_channels if self.soc.units[i].name == init else 0 for i in units]
            if sum(counts) == 0:
                raise UsageError(f"init unit {init!r} cannot run layer {spec.describe()}")
            init_arg: Any = counts
        else:
            init_arg = init  # the parametrization draws it: a contiguous or a per-channel random split
        assignment = make_assignment(parametrization, spec.out_channels, len(units), init_arg,
                                     generator=generator, **options)
        return SplitLayer(module, spec, units, alternatives, input_quantizers, assignment,
                          fold=same_input if fold is None else fold,
                          contiguous_sampling=parametrization == "thermometric")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batched = self._give_search_masks()
        try:
            return self.model(x)
        finally:
            for layer in batched:
                layer.take_given_mask()  # a layer the forward did not reach must not keep this step's mask

    def _give_search_masks(self) -> list[SplitLayer]:
        """Compute the masks and channel counts of every search-mode layer with a thermometric assignment
        in one autograd node and hand each layer its own (a mask and a sum node per layer and step
        otherwise); the layers it handed them to. A backward through the node makes them forget the
        counts, as a layer's own mask does."""
        layers = [layer for _, layer in self.split_layers()
                  if layer.mode is MaskMode.SEARCH and isinstance(layer.assignment, ThermometricAssignment)]
        if not layers:
            return []
        masks, counts = thermometric_masks([layer.assignment.alpha for layer in layers])
        for layer, mask, count in zip(layers, masks, counts):
            layer.give_search_mask(mask, count)
        if masks[0].grad_fn is not None:
            def forget(grads: tuple[torch.Tensor | None, ...]) -> None:
                for layer in layers:
                    layer.forget_forward_counts()

            masks[0].grad_fn.register_prehook(forget)
        return layers

    # ----------------------------------------------------------------- structure
    def split_layer(self, name: str) -> SplitLayer:
        module = self.model.get_submodule(name)
        if not isinstance(module, SplitLayer):
            raise UsageError(f"{name!r} is not a split layer; split layers: {', '.join(self.split_names)}")
        return module

    def split_layers(self) -> Iterator[tuple[str, SplitLayer]]:
        for name in self.split_names:
            yield name, self.split_layer(name)

    def nas_parameters(self) -> Iterator[nn.Parameter]:
        """The assignment parameters (trained with their own optimizer, no weight decay)."""
        for _, layer in self.split_layers():
            yield from layer.assignment.parameters()

    def net_parameters(self) -> Iterator[nn.Parameter]:
        """Every other parameter (weights, biases, quantizer scales)."""
        nas = {id(p) for p in self.nas_parameters()}
        for parameter in self.parameters():
            if id(parameter) not in nas:
                yield parameter

    def set_mode(self, mode: MaskMode | str) -> None:
        """``search`` (trainable mapping), ``sample`` (random split per forward) or ``fixed``."""
        mode = MaskMode(mode)
        if mode is MaskMode.FIXED:
            self.freeze_mapping()
            return
        for _, layer in self.split_layers():
            layer.set_mode(mode)

    def set_temperature(self, temperature: float) -> None:
        """Softmax temperature of every per-channel softmax assignment (thermometric ones have none)."""
        for _, layer in self.split_layers():
            if isinstance(layer.assignment, SoftmaxAssignment):
                layer.assignment.set_temperature(temperature)

    def freeze_mapping(self) -> None:
        """Fix every layer's mapping to the current hard assignment."""
        for _, layer in self.split_layers():
            layer.fix(layer.units_of_channels())

    def force_mapping(self, mapping: Mapping[str, Sequence[int | str] | torch.Tensor]) -> None:
        """Fix layers to given mappings: per layer, the SoC unit (index or name) of every output channel."""
        unknown = set(mapping) - set(self.split_names)
        if unknown:
            raise UsageError(f"mapping names unknown layer(s): {', '.join(sorted(unknown))}")
        for name, units in mapping.items():
            layer = self.split_layer(name)
            units = [self.soc.unit_index(u) if isinstance(u, str) else u for u in units]
            global_units = torch.as_tensor(units, dtype=torch.long, device=layer.unit_indices.device)
            lookup = torch.full((len(self.soc.units),), -1, dtype=torch.long, device=global_units.device)
            lookup[layer.unit_indices] = torch.arange(layer.num_units, device=global_units.device)
            local = lookup[global_units]
            if bool((local < 0).any()):
                raise UsageError(f"layer {name!r} can only use units "
                                 f"{[self.soc.units[i].name for i in layer.unit_indices.tolist()]}")
            layer.fix(local)

    def force_counts(self, counts: Mapping[str, Sequence[int]]) -> None:
        """Fix layers to contiguous splits: per layer, channels on each of the layer's units in order."""
        mapping = {}
        for name, per_unit in counts.items():
            layer = self.split_layer(name)
            if len(per_unit) != layer.num_units or sum(per_unit) != layer.channels or min(per_unit) < 0:
                raise UsageError(f"layer {name!r}: counts {list(per_unit)} must be {layer.num_units} "
                                 f"non-negative numbers adding up to {layer.channels}")
            local = torch.repeat_interleave(torch.arange(layer.num_units), torch.tensor(list(per_unit)))
            mapping[name] = layer.unit_indices.cpu()[local]
        self.force_mapping(mapping)

    # ----------------------------------------------------------------- cost
    def unit_counts(self) -> torch.Tensor:
        """Channels on every SoC unit for every split layer, ``[K, L]`` (differentiable in search mode).

        In search mode each layer reuses the counts of the mask its last forward computed (see
        :meth:`SplitLayer.channel_counts`); all layers' counts are scattered in one ``index_add``.
        """
        layers = [layer for _, layer in self.split_layers()]
        if not layers:
            return torch.zeros(len(self.soc.units), 0)
        local = torch.cat([layer.channel_counts() for layer in layers])
        index = self._count_index
        flat = local.new_zeros(len(self.soc.units) * len(layers)).index_add(0, index, local)
        return flat.view(len(self.soc.units), len(layers))

    def _unit_count_index(self) -> torch.Tensor:
        """Flat ``[K * L]`` position of every (layer, local unit) pair: ``unit * L + layer``."""
        layers = [layer for _, layer in self.split_layers()]
        return torch.cat([layer.unit_indices.cpu() * len(layers) + column for column, layer in enumerate(layers)]
                         + [torch.zeros(0, dtype=torch.long)])

    def searched_cost(self) -> dict[str, torch.Tensor]:
        """Latency (cycles) and energy (microjoules) per split layer, ``[L]`` each, of the current
        channel counts; differentiable in search mode (see :mod:`odimo_moo.discrete_cost`)."""
        return self.searched_cost_of(self.unit_counts())

    def _cost_tables(self) -> CostTables:
        # One CostTables (it remembers the layers' cost gradients), made anew when .to() moved the times.
        if self._tables.times is not self._cost_times:
            self._tables = CostTables(self.soc, self._cost_times)
        return self._tables

    def searched_cost_of(self, counts: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latency, energy and unit cycles per split layer of integer channel counts ``counts[K, L]``
        (SoC unit x split layer), differentiable w.r.t. ``counts`` with the exact-difference gradient."""
        tables = self._cost_tables()
        counts = counts.to(torch.float64)
        return {"latency": discrete_layer_cost(tables, counts, "latency"),
                "energy": discrete_layer_cost(tables, counts, "energy"),
                "unit_cycles": tables.unit_cycles(counts)}

    def _cost_of_fixed_layers(self) -> dict[str, float]:
        if not self.fixed_layers:
            return {"latency": 0.0, "energy": 0.0}
        table = LayerTable.from_specs([f.spec for f in self.fixed_layers])
        counts = torch.zeros(len(self.soc.units), len(self.fixed_layers), dtype=torch.float64)
        for column, fixed in enumerate(self.fixed_layers):
            counts[fixed.unit, column] = fixed.spec.out_channels
        with torch.no_grad():
            cycles = self.soc.unit_cycles(table, counts)
        self.soc.check_cycles(table, counts, cycles, counts > 0)
        costs = self.soc.layer_costs(cycles)
        return {metric: float(costs[metric].sum()) for metric in COST_METRICS}

    def _cost_on_default_units(self) -> dict[str, float]:
        """Whole-network cost with every split layer on the unit that runs it when not searched."""
        counts = torch.zeros(len(self.soc.units), len(self.split_names), dtype=torch.float64)
        for column, (_, layer) in enumerate(self.split_layers()):
            counts[self.soc.fixed_unit(layer.spec), column] = layer.channels
        with torch.no_grad():
            costs = self.soc.layer_costs(self._cost_tables().unit_cycles(counts))
        return {metric: float(costs[metric].sum()) + self._fixed_costs[metric] for metric in COST_METRICS}

    def cost_of(self, metric: str | None = None, include_fixed: bool = True) -> torch.Tensor:
        """Network cost for ``metric`` (default: the model's) in cycles or microjoules, summed over
        layers; differentiable in search mode."""
        metric = metric or self.metric
        if metric not in COST_METRICS:
            raise UsageError(f"unknown metric {metric!r}; choose one of {', '.join(COST_METRICS)}")
        counts = [layer.channel_counts() for _, layer in self.split_layers()]
        total = searched_layers_cost(self._cost_tables(), metric, counts, self._layer_units)
        if include_fixed:
            total = total + self._fixed_costs[metric]
        return total

    def reference_cost(self, metric: str | None = None) -> float:
        """The network's cost with every searched layer on the SoC's default unit (cycles or
        microjoules): the unit of :attr:`cost`."""
        return self._reference_costs[metric or self.metric]

    @property
    def cost(self) -> torch.Tensor:
        """The cost term of the loss: ``ln(cost / reference_cost())`` of the model's metric, dimensionless
        (0 = everything on the default unit, -0.69 = half of that cost).

        Its gradient is the cost's gradient over the current cost, whatever the reference, so lambda
        prices a relative change: lowering the cost by 1 % is worth ``lambda / 100`` of task loss on
        every SoC and model, and the pull does not fade as the cost falls (divided by a fixed
        reference, the last few percent of a cost 25x below the reference were worth 25x less).
        """
        return torch.log(self.cost_of() / self.reference_cost())

    @torch.no_grad()
    def cost_report(self) -> dict[str, Any]:
        """Hard-max latency and energy of the current hard mapping: whole network and searched layers."""
        modes = {name: layer.mode for name, layer in self.split_layers()}
        snapshot = {name: layer.fixed_units.clone() for name, layer in self.split_layers()}
        try:
            self.freeze_mapping()
            searched = self.searched_cost()
        finally:
            for name, layer in self.split_layers():
                layer.fixed_units.copy_(snapshot[name])
                layer.set_mode(modes[name])
        latency = float(searched["latency"].sum())
        energy = float(searched["energy"].sum())
        return {
            "latency_cycles": latency + self._fixed_costs["latency"],
            "energy_uj": energy + self._fixed_costs["energy"],
            "searched_latency_cycles": latency,
            "searched_energy_uj": energy,
            "fixed_latency_cycles": self._fixed_costs["latency"],
            "fixed_energy_uj": self._fixed_costs["energy"],
            "reference_latency_cycles": self._reference_costs["latency"],
            "reference_energy_uj": self._reference_costs["energy"],
            "layers": {
                name: {"latency_cycles": float(searched["latency"][i]), "energy_uj": float(searched["energy"][i]),
                       "unit_cycles": {u.name: float(searched["unit_cycles"][k, i])
                                       for k, u in enumerate(self.soc.units)}}
                for i, name in enumerate(self.split_names)
            },
        }

    # ----------------------------------------------------------------- mapping and export
    @torch.no_grad()
    def mapping(self) -> dict[str, dict[str, list[int]]]:
        """Per split layer, per unit name, the output channel indices it produces."""
        result: dict[str, dict[str, list[int]]] = {}
        for name, layer in self.split_layers():
            local = layer.units_of_channels().cpu()
            units = layer.unit_indices.cpu()
            result[name] = {self.soc.units[int(units[k])].name: torch.nonzero(local == k).flatten().tolist()
                            for k in range(layer.num_units)}
        return result

    def channel_split(self) -> dict[str, dict[str, int]]:
        """Per split layer, per unit name, how many channels it produces."""
        return {name: {unit: len(channels) for unit, channels in per_unit.items()}
                for name, per_unit in self.mapping().items()}

    def fold_batchnorm(self, integer_bias: bool = True) -> list[str]:
        """Fold every BatchNorm that directly follows a searched or fixed layer into it (running
        statistics; see :func:`odimo_moo.deploy.fold_batchnorm`). With ``integer_bias`` every layer
        with an integer unit then keeps its bias on the accumulator grid of the current mapping, as
        the integer export stores it (:func:`odimo_moo.deploy.round_biases`). Returns the folded
        BatchNorms."""
        names = self.split_names + [fixed.name for fixed in self.fixed_layers]
        folded = fold_batchnorm(self.model, {name: self.model.get_submodule(name) for name in names})
        if integer_bias:
            round_biases({name: self.model.get_submodule(name) for name in names})
        return folded

    @torch.no_grad()
    def export(self) -> fx.GraphModule:
        """A plain network: each split layer replaced by per-unit sub-layers holding their channels
        (and each fixed layer in its unit's format by its one unit's sub-layer)."""
        exported = copy.deepcopy(self.model)
        for name in self.split_names + self.quantized_fixed_names:
            split = exported.get_submodule(name)
            exported.add_submodule(name, split.export())
        exported.recompile()
        return exported
