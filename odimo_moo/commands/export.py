"""``odimo export``: turn a result folder's exported network into ONNX (or print its mapping)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import RunFailure, UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a result folder's exported network as ONNX",
        description="Read RESULT_DIR/exported.pt (written by `odimo search`, `odimo run` trials and baselines) "
                    "and write it as ONNX; print the per-layer channel split from RESULT_DIR/mapping.json.")
    parser.add_argument("result_dir", help="a result folder (holds exported.pt and mapping.json)")
    parser.add_argument("--out", default=None, help="ONNX file to write (default: RESULT_DIR/exported.onnx)")
    parser.add_argument("--json", action="store_true",
                        help="print the ONNX path and the channel split as JSON on stdout (messages on stderr)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        result = _export(args)
    if args.json:
        print(json.dumps(result, indent=2), file=stdout)
    return 0


def _export(args: argparse.Namespace) -> dict[str, Any]:
    """Write the ONNX file; print it and the channel split (stdout); return them for --json."""
    import torch

    from ..artifacts import export_onnx

    folder = Path(args.result_dir)
    model_path, mapping_path = folder / "exported.pt", folder / "mapping.json"
    if not model_path.is_file() or not mapping_path.is_file():
        raise UsageError(f"{folder} is not a result folder: expected exported.pt and mapping.json in it")
    try:
        model = torch.load(model_path, map_location="cpu", weights_only=False).eval()
        mapping = json.loads(mapping_path.read_text())
    except Exception as exc:
        raise RunFailure(f"cannot read {folder}: {type(exc).__name__}: {exc}") from exc
    check = json.loads((folder / "export_check.json").read_text()) if (folder / "export_check.json").is_file() else {}
    shape = check.get("input_shape")
    if shape is None:
        raise UsageError(f"{folder}/export_check.json lacks input_shape; re-run the search to regenerate it")
    target = Path(args.out) if args.out else folder / "exported.onnx"
    if not export_onnx(model, torch.zeros([1] + list(shape)), target):
        raise UsageError("ONNX export needs the onnx package: pip install 'odimo-moo[onnx]'")
    split = {layer: {unit: u["count"] for unit, u in info["units"].items()}
             for layer, info in mapping["layers"].items()}
    print(f"wrote {target}")
    for layer, units in split.items():
        print(f"  {layer:<28} " + "  ".join(f"{unit}={count}" for unit, count in units.items()))
    return {"result_dir": str(folder), "onnx": str(target), "input_shape": list(shape), "channel_split": split}
