"""``odimo export``: write a result folder's exported network in a deployable format (or check it)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..export_table import EXPORT_FORMATS
from .common import run_printing_json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a result folder's exported network as ONNX, torch.export or state_dict",
        description="Read RESULT_DIR/exported.pt (written by `odimo search`, `odimo run` trials and baselines) "
                    "and write it in --format; print the per-layer channel split from RESULT_DIR/mapping.json. "
                    "With --check DATASET, run the written file on DATASET's test split and compare it with "
                    "the network. See docs/EXPORT.md.")
    parser.add_argument("result_dir", help="a result folder (holds exported.pt and mapping.json)")
    parser.add_argument("--format", default="onnx-float", choices=tuple(EXPORT_FORMATS),
                        help="onnx-float (default): float ONNX; onnx-qdq: integer QuantizeLinear/DequantizeLinear "
                             "ONNX tagged per unit; torch-export: torch.export program (.pt2); state-dict: "
                             "tensors only")
    parser.add_argument("--out", default=None,
                        help="file to write (default: the run's own file for the format in RESULT_DIR: "
                             + ", ".join(f"{f.file} ({f.name})" for f in EXPORT_FORMATS.values()) + ")")
    parser.add_argument("--check", default=None, metavar="DATASET",
                        help="compare the written file with the network on DATASET's test split (ONNX runs in "
                             "onnxruntime): prediction agreement and largest logit difference")
    parser.add_argument("--data-root", default=None, help="where --check's data set lives (digits needs none)")
    parser.add_argument("--check-limit", type=int, default=None, metavar="N",
                        help="compare on at most N test images (default: all)")
    parser.add_argument("--json", action="store_true",
                        help="print the file, its check and the channel split as JSON on stdout (messages on stderr)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return run_printing_json(args, _export)


def _export(args: argparse.Namespace) -> dict[str, Any]:
    """Write the file (and check it); print it and the channel split; return them for --json."""
    from ..artifacts import export_result_folder

    folder = Path(args.result_dir)
    result = export_result_folder(folder, args.format, Path(args.out) if args.out else None,
                                  check_dataset=args.check, data_root=args.data_root, check_limit=args.check_limit)
    split = result["channel_split"]
    print(f"wrote {result['path']} ({args.format})")
    if "check" in result:
        check = result["check"]
        print(f"  checked on {check['images']} {args.check} test images: predictions agree on "
              f"{100 * check['prediction_agreement']:.2f} %, largest logit difference "
              f"{check['max_abs_logit_difference']:.3g} ({100 * check['max_relative_logit_difference']:.3g} %)")
    for layer, units in split.items():
        print(f"  {layer:<28} " + "  ".join(f"{unit}={count}" for unit, count in units.items()))
    return {"result_dir": str(folder), "format": args.format, "path": result["path"], "onnx": result["path"],
            "check": result.get("check"), "channel_split": split}
