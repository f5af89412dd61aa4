"""The one YAML reader of odimo-moo: SoC files, study files, compare presets and ``--set`` values.

It is PyYAML's safe loader (tags never construct Python objects) with two rules of its own:

- a key given twice in one mapping is an error (plain YAML silently keeps the last one, so a second
  ``training:`` block of a study would hide the first);
- numbers follow YAML 1.2: ``1e-4`` and ``260e6`` (no dot) are floats, where YAML 1.1 reads them as
  strings.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# YAML 1.1 wants a dot in a float with an exponent; YAML 1.2 (and every user) does not.
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class InvalidYaml(ValueError):
    """Text that is not YAML, or repeats a key; ``detail`` says where and what, to append to a source."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Loader(yaml.SafeLoader):
    """SafeLoader refusing repeated keys and reading exponent numbers as floats."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # the base class reports the unhashable key
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


def parse_yaml(text: str) -> Any:
    """The document in ``text``; :class:`InvalidYaml` with a one-line ``detail`` (" at line L,
    column C: problem" or ": problem") when it is not valid YAML or repeats a key."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InvalidYaml(f"{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise InvalidYaml(f": {' '.join(str(exc).split())}") from None
