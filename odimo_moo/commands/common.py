"""Options and helpers shared by the subcommands that train (search, run, compare)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..errors import UsageError
from ..devices import DEVICES


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b.c": "x"}`` with YAML-typed values."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {pair!r}: expected KEY=VALUE")
        try:
            values[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise UsageError(f"--set {pair!r}: value is not valid YAML ({exc.problem})") from exc
    return values


def add_setup_options(parser: argparse.ArgumentParser) -> None:
    """Options defining the problem instance (see :class:`odimo_moo.workbench.Setup`)."""
    parser.add_argument("--soc", default="diana", help="registered SoC name (see `odimo plugins`)")
    parser.add_argument("--model", default="resnet8", help="registered model name")
    parser.add_argument("--dataset", default="digits", help="digits (embedded), mnist, cifar10, cifar100, imagenet")
    parser.add_argument("--data-root", default=None, help="folder holding the dataset files")
    parser.add_argument("--download", action="store_true", help="download the dataset if missing (needs network)")
    parser.add_argument("--data-limit", type=int, default=None, help="cap each split at this many samples")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input resolution for datasets that take one (digits: upsampled from 8; imagenet)")
    parser.add_argument("--metric", choices=("latency", "energy"), default="latency", help="cost in the loss")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--exclude", action="append", default=[], metavar="LAYER",
                        help="layer name (fx qualified name) never to split; repeatable")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def out_dir(path: str) -> Path:
    return Path(path).expanduser()
