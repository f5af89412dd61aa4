"""Damaged result files read back by ``odimo export``: one line naming the file, and nothing written
before every file is checked (issue 16, item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from test_reliability_inputs import check_clean_error

GOOD_MAPPING = {"layers": {"1": {"units": {"digital": {"count": 2}}}}}
GOOD_CHECK = {"input_shape": [4]}

DAMAGED = {
    "mapping_not_json": ("mapping.json", "{ not json", "JSONDecodeError"),
    "mapping_empty_object": ("mapping.json", "{}", "no 'layers' object"),
    "mapping_a_list": ("mapping.json", "[1, 2]", "expected a JSON object, got list"),
    "mapping_without_counts": ("mapping.json", json.dumps({"layers": {"conv1": {"units": {"digital": {}}}}}),
                               "layer 'conv1' lacks per-unit channel counts"),
    "mapping_bad_units": ("mapping.json", json.dumps({**GOOD_MAPPING, "units": "digital"}), "'units' is not a list"),
    "check_not_json": ("export_check.json", "\x00\x01garbage", "not readable JSON"),
    "check_a_number": ("export_check.json", "3", "expected a JSON object, got int"),
    "check_bad_shape": ("export_check.json", json.dumps({"input_shape": ["a", -1]}), "'input_shape' must be"),
}


def _result_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "result"
    folder.mkdir()
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), folder / "exported.pt")
    (folder / "mapping.json").write_text(json.dumps(GOOD_MAPPING))
    (folder / "export_check.json").write_text(json.dumps(GOOD_CHECK))
    return folder


@pytest.mark.parametrize("case", DAMAGED, ids=list(DAMAGED))
@pytest.mark.parametrize("fmt", ["onnx-float", "onnx-qdq", "state-dict"])
def test_damaged_result_files_are_named_and_nothing_is_written(case, fmt, tmp_path, capsys):
    name, text, problem = DAMAGED[case]
    folder = _result_folder(tmp_path)
    (folder / name).write_text(text)
    before = sorted(path.name for path in folder.iterdir())
    err = check_clean_error(capsys, ["export", str(folder), "--format", fmt], 1, f"{folder / name} is damaged")
    assert problem in err and "re-run the search" in err
    assert sorted(path.name for path in folder.iterdir()) == before


def test_missing_export_check_is_a_usage_error(tmp_path, capsys):
    folder = _result_folder(tmp_path)
    (folder / "export_check.json").unlink()
    check_clean_error(capsys, ["export", str(folder)], 2, f"{folder / 'export_check.json'} is missing")
    assert not (folder / "exported.onnx").exists()


def test_a_sound_result_folder_still_exports(tmp_path, capsys):
    folder = _result_folder(tmp_path)
    from odimo_moo.cli import main

    assert main(["export", str(folder), "--format", "state-dict"]) == 0
    assert (folder / "exported_state_dict.pt").is_file()
    assert "1" in capsys.readouterr().out
