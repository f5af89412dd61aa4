"""``odimo plugins``: the loaded plugins and the SoCs, strategies, models and heuristics they register."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import TYPE_CHECKING, Any

from ..registry import PluginRegistry, Registered

if TYPE_CHECKING:
    from ..soc import SoC


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plugins", help="list registered SoCs, strategies, models and heuristic mappings, and their plugins",
        description="List every loaded plugin and the SoCs (units, clock, powers), search strategies, "
                    "models and heuristic mappings it registers, with the plugin's origin (entry point, "
                    "module, .py or YAML file). Plugins come from the 'odimo_moo' entry-point group and "
                    "from --plugin.")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(handler=run)


def energy_model(soc: SoC) -> str:
    """``active_idle`` for the default energy model, else the overriding method's qualified name."""
    from ..soc import SoC

    method = type(soc).energy
    return "active_idle" if method is SoC.energy else f"custom ({method.__qualname__})"


def _soc_record(entry: Registered) -> dict[str, Any]:
    soc: SoC = entry.obj
    return {
        "name": soc.name,
        "description": soc.description,
        "frequency_hz": soc.frequency_hz,
        "default_unit": soc.default_unit,
        "energy_model": energy_model(soc),
        "units": [
            {"name": unit.name, "active_power_mw": unit.active_power_mw, "idle_power_mw": unit.idle_power_mw,
             "format": {"type": type(unit.data_format).__name__, **dataclasses.asdict(unit.data_format)}}
            for unit in soc.units
        ],
        "plugin": entry.plugin,
        "origin": entry.origin,
    }


def _named_record(entry: Registered) -> dict[str, Any]:
    return {"name": entry.name, "description": entry.obj.description,
            "plugin": entry.plugin, "origin": entry.origin}


def collect(registry: PluginRegistry) -> dict[str, Any]:
    """Everything ``odimo plugins --json`` prints."""
    return {
        "plugins": [{"name": name, "origin": origin} for name, origin in sorted(registry.origins.items())],
        "socs": [_soc_record(entry) for _, entry in sorted(registry.socs().items())],
        "strategies": [_named_record(entry) for _, entry in sorted(registry.strategies().items())],
        "models": [_named_record(entry) for _, entry in sorted(registry.models().items())],
        "heuristics": [{**_named_record(entry), "soc": entry.obj.soc}
                       for _, entry in sorted(registry.heuristics().items())],
    }


def _print_text(listing: dict[str, Any]) -> None:
    print("SoCs:")
    if not listing["socs"]:
        print("  (none)")
    for soc in listing["socs"]:
        print(f"  {soc['name']}: {soc['description']}")
        print(f"    clock {soc['frequency_hz'] / 1e6:g} MHz, default unit {soc['default_unit']}, "
              f"energy model {soc['energy_model']}")
        for unit in soc["units"]:
            fmt = " ".join([unit["format"]["type"]] + [f"{key}={value}" for key, value in unit["format"].items()
                                                       if key != "type" and value is not None])
            print(f"    unit {unit['name']}: {unit['active_power_mw']:g} mW active, "
                  f"{unit['idle_power_mw']:g} mW idle, format {fmt}")
        print(f"    from plugin {soc['plugin']} ({soc['origin']})")
    for title, key in (("Strategies", "strategies"), ("Models", "models"), ("Heuristic mappings", "heuristics")):
        print(f"{title}:")
        if not listing[key]:
            print("  (none)")
        for item in listing[key]:
            for_soc = f" (SoC {item['soc']})" if "soc" in item else ""
            print(f"  {item['name']}{for_soc}: {item['description']}")
            print(f"    from plugin {item['plugin']} ({item['origin']})")


def run(args: argparse.Namespace) -> int:
    listing = collect(PluginRegistry.load(args.plugin))
    if args.json:
        print(json.dumps(listing, indent=2))
    else:
        _print_text(listing)
    return 0
