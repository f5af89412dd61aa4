"""The ``odimo`` command line: one subcommand per module in :mod:`odimo_moo.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
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

# Set to 1 to get the traceback of any error (usage and runtime errors, and bugs).
DEBUG_ENV = "ODIMO_DEBUG"


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
