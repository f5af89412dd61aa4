"""The ``odimo`` command line: one subcommand per module in :mod:`odimo_moo.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .errors import OdimoError

# Each module defines add_parser(subparsers) and run(args) -> int.
COMMAND_MODULES = (
    "plugins",
    "cost",
    "search",
    "export",
    "run",
    "report",
    "compare",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="odimo", description="Map DNNs onto multi-accelerator SoCs at training time (ODiMO).")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="load an extra plugin (importable module name, .py file or YAML SoC file); repeatable")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"odimo_moo.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except OdimoError as exc:
        print(f"odimo {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"odimo {args.command}: interrupted; finished results are kept on disk", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
