"""The docs' table of study settings (docs/SETTINGS.md), written from the settings' declarations.

Regenerate it with ``python -m odimo_moo.study.settings_doc > docs/SETTINGS.md``; a test checks that
the file is current.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable

from ..recipe import SEARCH_ONLY_KEYS, Recipe, key_of
from .drivers import DRIVERS
from .schema import Heartbeat, StudyConfig
from .settings import Setting, declared, default_of, plain

_HEADER = """# Study settings

The keys of a study file (`odimo run STUDY.yaml`, `--set KEY=VALUE`). Generated from their declarations
in `odimo_moo/study/schema.py`, `odimo_moo/recipe.py` and `odimo_moo/study/drivers.py` by
`python -m odimo_moo.study.settings_doc > docs/SETTINGS.md`; do not edit by hand.
"""


def _training_intro() -> str:
    """What the training parameters' table lists."""
    search_only = ", ".join(f"`{key}`" for key in SEARCH_ONLY_KEYS)
    return ("The recipe (`odimo_moo/recipe.py`) of every strategy that trains: the keys of `training`, "
            "`search_space` and `enqueue`, and `--set KEY=VALUE` of `odimo search` and `odimo compare`. "
            f"{search_only} belong to the gradient search (`odimo`) alone; `odimo search --lambda` and "
            "`odimo compare --lambdas` set lambda. A strategy's own parameters (`mapping`, `evaluations`, ...) "
            "come on top.")


def _rule(rule: Setting) -> str:
    """The bounds and choices of a setting, in words."""
    parts = ["required"] if rule.required else []
    if rule.choices:
        parts.append("one of " + ", ".join(f"`{choice}`" for choice in rule.choices))
    if rule.minimum is not None and rule.maximum is not None:
        ends = "()" if rule.open_bounds else "[]"
        parts.append(f"in {ends[0]}{rule.minimum:g}, {rule.maximum:g}{ends[1]}")
    elif rule.minimum is not None:
        parts.append(f"{'>' if rule.open_bounds else '>='} {rule.minimum:g}")
    if rule.identity:
        parts.append("defines the problem" + ("" if rule.identity_when_empty else " when set"))
    return "; ".join(parts)


def _default(field: dataclasses.Field, rule: Setting) -> str:
    if rule.default_doc:
        return rule.default_doc
    if rule.required:
        return ""
    value = default_of(field)
    return f"`{json.dumps(rule.dump(value) if rule.dump else plain(value))}`"


def _cell(text: str) -> str:
    """``text`` inside a markdown table cell (``|`` escaped)."""
    return text.replace("|", "\\|")


def _rows(cls: type, prefix: str = "", key: Callable[[str], str] = str) -> list[str]:
    """One row per declared field of ``cls``, named ``prefix`` + ``key(field name)``."""
    return [f"| `{prefix}{key(f.name)}` | `{_cell(str(f.type))}` | {_default(f, rule)} | {_rule(rule)} | "
            f"{_cell(rule.help)} |" for f, rule in declared(cls)]


def _sampler_rows() -> list[str]:
    rows = []
    for driver_name, driver in DRIVERS.items():
        for name, sampler in driver.samplers.items():
            settings = ", ".join(f"`{key}` ({rule.kind.__name__}{'; ' + _rule(rule) if _rule(rule) else ''})"
                                 for key, rule in sampler.settings.items()) or "none"
            rows.append(f"| {driver_name} | `{name}` | `{sampler.implementation}` | {settings} |")
    return rows


def settings_markdown() -> str:
    """docs/SETTINGS.md: every study key, the heartbeat's keys, the training parameters and each
    driver's samplers."""
    table = ["| key | type | default | rule | meaning |", "|---|---|---|---|---|"]
    lines = [_HEADER, "## Keys", "", *table, *_rows(StudyConfig), *_rows(Heartbeat, "heartbeat."), "",
             "## Training parameters", "", _training_intro(), "", *table, *_rows(Recipe, key=key_of), "",
             "## Samplers", "",
             "`sampler: NAME` or `sampler: {name: NAME, settings: {...}}`; the first sampler of a driver is its "
             "default, and the study's `seed` seeds every sampler.", "",
             "| driver | sampler | implementation | settings |", "|---|---|---|---|", *_sampler_rows()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_markdown(), end="")
