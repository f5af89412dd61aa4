"""Options and helpers shared by the subcommands that train (search, run, compare).

``--threads`` (:func:`add_threads_option`, :func:`apply_threads`) is how many CPU threads PyTorch
uses: it changes how fast, not what, is trained, so it is a plain option and not a Setup field.

The problem instance (:class:`odimo_moo.setup_settings.Setup`) comes from the command line through ONE
pair of functions: :func:`add_setup_options` defines an option for every Setup field from its
declaration in :mod:`odimo_moo.setup_settings` (and refuses to build a parser that misses one),
:func:`build_setup` reads them back, driven by ``dataclasses.fields(Setup)``, so a new Setup field
reaches every command or breaks them all loudly.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import UsageError
from ..setup_settings import SETUP_SETTINGS, Setup
from ..study.problems import coerce, kind_name
from ..study.settings import Setting
from ..yaml_loader import InvalidYaml, parse_yaml


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b.c": "x"}`` with YAML-typed values."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {pair!r}: expected KEY=VALUE")
        try:
            values[key.strip()] = parse_yaml(text) if text.strip() else ""
        except InvalidYaml as exc:
            raise UsageError(f"--set {pair!r}: value is not valid YAML{exc.detail}") from exc
    return values


#: Setup fields read from an option of another name: field -> (argparse dest, conversion). Every
#: other field is read from the option whose dest is the field's own name.
SETUP_DESTS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "plugins": ("plugin", tuple),  # the top-level --plugin option
    "exclude": ("exclude", tuple),
    "progress": ("no_progress", lambda hidden: not hidden),
}


def setup_fields() -> list[str]:
    """The names of :class:`~odimo_moo.setup_settings.Setup`'s fields, in order."""
    return [f.name for f in dataclasses.fields(Setup)]


def _option(name: str, rule: Setting, default: Any) -> tuple[str, dict[str, Any]]:
    """The flag and argparse options of Setup field ``name``, from its declaration."""
    flag = "--" + name.replace("_", "-")
    if rule.kind is bool and default:
        return "--no-" + flag[2:], {"action": "store_true", "default": False, "help": f"without {rule.help}"}
    if rule.kind is bool:
        return flag, {"action": "store_true", "default": default, "help": rule.help}
    if rule.kind is None:
        return flag, {"action": "append", "default": list(default), "metavar": "NAME", "help": rule.help}
    options = {"default": default, "choices": rule.choices or None,
               "help": rule.help if default is None else f"{rule.help} (default {default})"}
    if rule.kind in (int, float):  # bounds are checked where the value is used (data, splits)
        options["type"] = rule.kind
    return flag, options


def add_setup_options(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """Options defining the problem instance, one per :class:`~odimo_moo.setup_settings.Setup` field, built
    from its declaration (:data:`~odimo_moo.setup_settings.SETUP_SETTINGS`) and Setup's default.

    With ``defaults=False`` an option that is not given stays out of the parsed namespace, so that
    :func:`build_setup` can take the value from a preset instead. Raises ``RuntimeError`` (a bug, found
    by every CLI test) if a Setup field has no option.
    """
    dests = {"plugin"}  # the top-level --plugin option of `odimo`
    for field in dataclasses.fields(Setup):
        if field.name not in SETUP_SETTINGS or SETUP_DESTS.get(field.name, (field.name,))[0] in dests:
            continue
        flag, options = _option(field.name, SETUP_SETTINGS[field.name], field.default)
        if not defaults:
            options["default"] = argparse.SUPPRESS
        dests.add(parser.add_argument(flag, **options).dest)
    forgotten = [name for name in setup_fields() if SETUP_DESTS.get(name, (name,))[0] not in dests]
    if forgotten:
        raise RuntimeError(f"Setup field(s) {', '.join(forgotten)} have no command-line option: declare "
                           f"them in setup_settings.SETUP_SETTINGS (and in SETUP_DESTS if the dest differs)")


def setup_values(args: argparse.Namespace) -> dict[str, Any]:
    """The Setup fields the parsed ``args`` hold (all of them, unless the options were added with
    ``defaults=False``: then only those given). An empty ``--plugin`` list counts as not given."""
    values: dict[str, Any] = {}
    for name in setup_fields():
        dest, convert = SETUP_DESTS.get(name, (name, lambda value: value))
        if hasattr(args, dest) and not (name == "plugins" and not getattr(args, dest)):
            values[name] = convert(getattr(args, dest))
    return values


def _coerce(name: str, value: Any) -> Any:
    """``value`` as Setup field ``name`` takes it (from YAML or ``--set``), by the study file's rules
    (:func:`~odimo_moo.study.problems.coerce`); a clear error otherwise."""
    field = Setup.__dataclass_fields__[name]
    nullable = "None" in str(field.type) or field.default is None
    if value is None and nullable:
        return None
    if isinstance(field.default, tuple):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
            raise UsageError(f"setup option {name}={value!r} must be a list of names")
        return tuple(items)
    kind = SETUP_SETTINGS[name].kind
    try:
        return coerce(value, kind)
    except (TypeError, ValueError):
        raise UsageError(f"setup option {name}={value!r} must be {kind_name(kind)}"
                         f"{' or null' if nullable else ''}") from None


def build_setup(args: argparse.Namespace, base: Mapping[str, Any] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Setup:
    """The :class:`~odimo_moo.setup_settings.Setup` of parsed arguments, field by field
    (``dataclasses.fields(Setup)``): ``base`` (e.g. a preset's values) < options given in ``args`` <
    ``overrides`` (e.g. ``--set data_limit=null``). Plugins add up: the base's, then ``--plugin``'s."""
    base, overrides = dict(base or {}), dict(overrides or {})
    known = set(setup_fields())
    for source in (base, overrides):
        unknown = sorted(set(source) - known)
        if unknown:
            raise UsageError(f"unknown setup option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    given = setup_values(args)
    values = {**base, **given, **overrides}
    if "plugins" in base and "plugins" in given and "plugins" not in overrides:
        values["plugins"] = tuple(base["plugins"]) + tuple(given["plugins"])
    return Setup(**{name: _coerce(name, value) for name, value in values.items()})


#: ``--threads`` when not given: one PyTorch CPU thread, on every machine (see :data:`THREADS_HELP`).
DEFAULT_THREADS = 1
THREADS_HELP = (
    "PyTorch CPU threads for training (default 1 on every machine, as the packaged studies use: on a "
    "shared 2-core machine PyTorch's default of one per core made one-lambda searches take 11-163 s, one "
    "thread 10.7-17.2 s; and one thread keeps the wall times that reports and compare's matched budget "
    "use repeatable). On a dedicated machine, give the number of its idle cores.")


def thread_count(text: str) -> int:
    """The argparse type of ``--threads``: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads >= 1, e.g. --threads 1; got "
                                         f"{text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads >= 1, e.g. --threads 1; got {value}")
    return value


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (default :data:`DEFAULT_THREADS`), for a command that trains."""
    parser.add_argument("--threads", type=thread_count, default=DEFAULT_THREADS, metavar="N", help=THREADS_HELP)


def apply_threads(count: int) -> None:
    """Make this process's PyTorch use ``count`` CPU threads; call it before any torch work.

    Sets the intra-op threads (every op of training runs on them) and the inter-op pool. PyTorch fixes
    the inter-op pool for good once a process has used or set it, so an in-process second command
    (tests, notebooks) keeps the first command's pool; the intra-op count always follows ``count``.
    """
    import torch

    torch.set_num_threads(count)
    if torch.get_num_interop_threads() != count:
        try:
            torch.set_num_interop_threads(count)
        except RuntimeError:  # the pool is already fixed for this process (see above)
            pass


def run_printing_json(args: argparse.Namespace, produce: Callable[[argparse.Namespace], Any]) -> int:
    """Run a command's ``produce(args)``; with ``--json`` its messages go to stderr and the document
    it returns is the only thing on stdout."""
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        document = produce(args)
    if args.json:
        print(json.dumps(document, indent=2), file=stdout)
    return 0


def out_dir(path: str) -> Path:
    """An output or input folder given on the command line (``~`` expanded)."""
    return Path(path).expanduser()
