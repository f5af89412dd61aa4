"""The ``odimo`` command line: one subcommand per module in :mod:`odimo_moo.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Any, Sequence

from . import __version__
from .errors import OdimoError

#: Each subcommand's module in :mod:`odimo_moo.commands` (it defines ``add_parser(subparsers)`` and
#: ``run(args) -> int``) and its one-line help. A module is imported only when its command is parsed:
#: several import torch, which takes seconds, and ``odimo --help`` should not wait for it.
COMMANDS = {
    "plugins": "list registered SoCs, strategies, models and heuristic mappings, and their plugins",
    "cost": "latency and energy of one layer split across a SoC's compute units",
    "search": "run warmup, search and fine-tune for one lambda",
    "export": "write a result folder's exported network as ONNX, torch.export or state_dict",
    "run": "run a study: Optuna or pymoo over lambda and hyperparameters, then a Pareto report",
    "report": "Pareto fronts, hypervolume, CSV/JSON and plots of a study",
    "compare": "compare ODiMO with evolutionary, random and heuristic mappings on one setup",
}
COMMAND_MODULES = tuple(COMMANDS)

# Set to 1 to get the traceback of any error (usage and runtime errors, and bugs).
DEBUG_ENV = "ODIMO_DEBUG"

#: What ``odimo`` returns; printed by ``odimo --help``.
EXIT_CODES = (
    (0, "success"),
    (1, "the work failed (diverged training, unreadable files, disk full), or a bug"),
    (2, "usage error: the message names the problem and the fix"),
    (130, "interrupted (Ctrl-C): finished work is kept; the same command resumes"),
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _CommandParsers(dict):
    """Subcommand name -> its parser, built by the command's module on first lookup (``None`` until then).

    argparse looks the chosen command up with ``[]`` and checks names with ``in``, so only the command
    being run (or whose ``--help`` is asked for) imports its module.
    """

    def __init__(self, action: "_LazySubcommands") -> None:
        super().__init__()
        self._action = action

    def __getitem__(self, name: str) -> argparse.ArgumentParser:
        parser = super().__getitem__(name)
        if parser is None:
            super().__delitem__(name)  # the module's add_parser refuses a name that is taken
            try:
                importlib.import_module(f"odimo_moo.commands.{name}").add_parser(self._action)
            except BaseException:
                super().__setitem__(name, None)
                raise
            parser = super().__getitem__(name)
        return parser


class _LazySubcommands(argparse._SubParsersAction):
    """The subcommands action of ``odimo``: each command's parser is built when it is first needed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._name_parser_map = self.choices = _CommandParsers(self)

    def add_command(self, name: str, help: str) -> None:
        """List ``name`` with its one-line ``help``; its module builds the parser on first lookup."""
        super().add_parser(name, help=help)
        dict.__setitem__(self._name_parser_map, name, None)

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """The command module's parser. Its ``help`` must be the one :data:`COMMANDS` lists (that one
        is shown by ``odimo --help``); a mismatch is a bug, raised as ``RuntimeError``."""
        given = kwargs.pop("help", None)
        if given is not None and given != COMMANDS.get(name):
            raise RuntimeError(f"odimo_moo.commands.{name} gives the help {given!r}, but odimo_moo.cli.COMMANDS "
                               f"lists {COMMANDS.get(name)!r}: make them equal")
        return super().add_parser(name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The ``odimo`` parser; a subcommand's options are added when that subcommand is parsed."""
    codes = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES)
    parser = _Parser(prog="odimo", description="Map DNNs onto multi-accelerator SoCs at training time (ODiMO).",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog=f"`odimo COMMAND --help` describes a command.\n\nexit status:\n{codes}")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="load an extra plugin (importable module name, .py file or YAML SoC file); repeatable")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, action=_LazySubcommands)
    for name, help_text in COMMANDS.items():
        sub.add_command(name, help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)  # imports the chosen command's module
    except KeyboardInterrupt:
        print("odimo: interrupted", file=sys.stderr)
        return 130
    if args.command is None:
        parser.print_help()
        return 2
    debug = os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    try:
        return int(args.handler(args) or 0)
    except OdimoError as exc:
        if debug:
            traceback.print_exc()
        print(f"odimo {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"odimo {args.command}: interrupted; finished results are kept on disk", file=sys.stderr)
        return 130
    except OSError as exc:  # the system refused (disk full, permissions, missing path): not a bug
        if debug:
            traceback.print_exc()
        print(f"odimo {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: one line, and the way to get the traceback
        if debug:
            raise
        print(f"odimo {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} (this is a bug; "
              f"re-run with {DEBUG_ENV}=1 for the traceback and report it)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
