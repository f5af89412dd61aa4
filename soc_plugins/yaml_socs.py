"""The SoCs described by the YAML files shipped in this package (``odimo_moo/soc_plugins/*.yaml``).

A user's own YAML SoC is loaded with ``odimo --plugin path/to/soc.yaml``; see :mod:`odimo_moo.yaml_soc`
for the schema.
"""

from __future__ import annotations

import importlib.resources

from odimo_moo.hookspecs import hookimpl
from odimo_moo.soc import SoC
from odimo_moo.yaml_soc import parse_soc


@hookimpl
def odimo_register_socs() -> list[SoC]:
    folder = importlib.resources.files("odimo_moo.soc_plugins")
    files = sorted((item for item in folder.iterdir() if item.name.endswith((".yaml", ".yml"))),
                   key=lambda item: item.name)
    return [parse_soc(item.read_text(encoding="utf-8"), f"{item.name} (shipped with odimo-moo)",
                      sample_formulas=False)  # tests/test_yaml_soc.py samples these: no torch at start-up
            for item in files]
