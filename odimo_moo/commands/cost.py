"""``odimo cost``: latency and energy of one layer split across a SoC's compute units."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..registry import PluginRegistry, pick

if TYPE_CHECKING:  # torch-dependent: imported when the command runs, so that `odimo cost --help` is fast
    from ..layer_spec import LayerSpec
    from ..soc import SoC

_COUNT = re.compile(r"^[0-9]+$")
_EXAMPLE = "e.g. --split digital=10,analog=6"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cost", help="latency and energy of one layer split across a SoC's compute units",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a SoC's cost model on one searched layer whose output channels are split\n"
                    "across its compute units, which run in parallel.\n\n"
                    "  layer latency    the slowest unit's cycles\n"
                    "  unit energy      its active power over its own cycles plus its idle power for the\n"
                    "                   rest of the layer (the default active + idle model)\n"
                    "  layer energy     the SoC's own energy model\n\n"
                    "For SoCs whose power is not additive per unit (DIANA: both units active draw\n"
                    "42.39 mW, not 24.96 + 28.74) the unit energies are the additive approximation and\n"
                    "only the layer energy is the SoC's model.",
        epilog="example:\n  odimo cost --soc diana --split digital=8,analog=8 \\\n"
               "    --layer 'conv2d in_channels=16 out_channels=16 kernel_size=3 output_size=32x32'")
    parser.add_argument("--soc", required=True, help="registered SoC name (see `odimo plugins`)")
    parser.add_argument("--layer", required=True, metavar="SPEC",
                        help="'conv2d in_channels=.. out_channels=.. kernel_size=3 output_size=8x8 [stride=1] "
                             "[groups=1]' or 'linear in_features=.. out_features=..'")
    parser.add_argument("--split", required=True, metavar="UNIT=N,...",
                        help="output channels per unit; they must add up to the layer's output channels "
                             "(units not named get 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(handler=run)


def parse_split(text: str, soc: SoC, spec: LayerSpec) -> dict[str, int]:
    """Channels per unit (every unit of ``soc``, in order) from ``"UNIT=N,UNIT=N"``, checked against ``spec``."""
    counts = dict.fromkeys(soc.unit_names, 0)
    named: set[str] = set()
    for item in text.split(","):
        unit, sep, value = item.strip().partition("=")
        unit, value = unit.strip(), value.strip()
        if not sep or not unit or not _COUNT.match(value):
            raise UsageError(f"--split: {item.strip()!r} is not UNIT=N with N a non-negative integer; {_EXAMPLE}")
        if unit not in counts:
            raise UsageError(f"--split: SoC {soc.name!r} has no unit {unit!r}; its units are "
                             f"{', '.join(soc.unit_names)}")
        if unit in named:
            raise UsageError(f"--split: unit {unit!r} given twice")
        named.add(unit)
        counts[unit] = int(value)
    total = sum(counts.values())
    if total != spec.out_channels:
        raise UsageError(f"--split: channels add up to {total}, but the layer has {spec.out_channels} output "
                         f"channels (units not named get 0)")
    able = [soc.units[i].name for i in soc.supporting_units(spec)]
    for unit, count in counts.items():
        if count and unit not in able:
            raise UsageError(f"--split: unit {unit!r} of SoC {soc.name!r} cannot run '{spec.describe()}'; "
                             f"units that can: {', '.join(able) or 'none'}")
    return counts


@dataclass(frozen=True)
class LayerCost:
    """Cost of one layer under one split (cycles and microjoules)."""

    soc: SoC
    spec: LayerSpec
    channels: dict[str, int]
    unit_cycles: dict[str, float]
    unit_energy_uj: dict[str, float]
    latency_cycles: float
    energy_uj: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "soc": self.soc.name,
            "layer": self.spec.describe(),
            "units": {unit: {"channels": self.channels[unit], "latency_cycles": self.unit_cycles[unit],
                             "energy_uj": self.unit_energy_uj[unit]} for unit in self.soc.unit_names},
            "latency_cycles": self.latency_cycles,
            "energy_uj": self.energy_uj,
        }


def layer_cost(soc: SoC, spec: LayerSpec, channels: dict[str, int]) -> LayerCost:
    """Hard-max latency, per-unit active + idle energy and the SoC's total energy of ``spec``."""
    import torch

    from ..layer_spec import LayerTable

    layers = LayerTable.from_specs([spec])
    counts = torch.tensor([[float(channels[name])] for name in soc.unit_names], dtype=torch.float64)
    with torch.no_grad():
        cycles = soc.unit_cycles(layers, counts)
        soc.check_cycles(layers, counts, cycles, counts > 0)
        costs = soc.layer_costs(cycles)
    latency = costs["latency"]
    unit_energy = {}
    for k, unit in enumerate(soc.units):
        mw_cycles = unit.active_power_mw * cycles[k] + unit.idle_power_mw * (latency - cycles[k])
        unit_energy[unit.name] = float(soc.to_microjoules(mw_cycles)[0])
    return LayerCost(
        soc=soc,
        spec=spec,
        channels=dict(channels),
        unit_cycles={unit.name: float(cycles[k, 0]) for k, unit in enumerate(soc.units)},
        unit_energy_uj=unit_energy,
        latency_cycles=float(latency[0]),
        energy_uj=float(costs["energy"][0]),
    )


def _print_table(cost: LayerCost) -> None:
    print(f"SoC {cost.soc.name}, layer: {cost.spec.describe()}")
    width = max(len("layer"), *(len(name) for name in cost.soc.unit_names))
    print(f"{'unit':<{width}}  {'channels':>8}  {'latency [cycles]':>18}  {'energy [uJ]':>14}")
    for name in cost.soc.unit_names:
        print(f"{name:<{width}}  {cost.channels[name]:>8}  {cost.unit_cycles[name]:>18,.1f}  "
              f"{cost.unit_energy_uj[name]:>14.6g}")
    print(f"{'layer':<{width}}  {cost.spec.out_channels:>8}  {cost.latency_cycles:>18,.1f}  "
          f"{cost.energy_uj:>14.6g}")
    print("(layer latency: slowest unit; layer energy: the SoC's energy model; unit energy: active + idle)")


def run(args: argparse.Namespace) -> int:
    from ..layer_spec import parse_layer_spec

    registry = PluginRegistry.load(args.plugin)
    spec = parse_layer_spec(args.layer)
    soc: SoC = pick(registry.socs(), args.soc, "SoC")
    cost = layer_cost(soc, spec, parse_split(args.split, soc, spec))
    if args.json:
        print(json.dumps(cost.to_dict()))
    else:
        _print_table(cost)
    return 0
