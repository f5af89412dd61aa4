"""Costs are checked where they are computed: a formula that gives a negative, NaN or infinite cycle
count for a layer the unit supports is an error naming the SoC, unit, layer and value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odimo_moo.cli import main

LAYER = "conv2d in_channels=16 out_channels=16 kernel_size=3 output_size=8x8"


def _soc(tmp_path: Path, npu_cycles: str) -> str:
    path = tmp_path / "soc.yaml"
    path.write_text(f"""name: badsoc
frequency_mhz: 100
default_unit: cpu
units:
  cpu:
    active_power_mw: 10
    format: int8
    cycles: "n * cin * 10"
  npu:
    active_power_mw: 20
    format: int8
    supports: {{ops: [conv2d, linear], groups: 1}}
    cycles: "{npu_cycles}"
""")
    return str(path)


@pytest.mark.parametrize("formula, value", [("n * 100 - 50 * cin", "-700"), ("(n - 1) / (n - 1) * 5", "nan"),
                                            ("1000 / (cin - 16) + n", "inf")])
def test_bad_formula_is_refused_by_cost_and_at_model_build(tmp_path, capsys, formula, value):
    plugin = _soc(tmp_path, formula)
    assert main(["--plugin", plugin, "cost", "--soc", "badsoc", "--layer", LAYER, "--split", "cpu=15,npu=1"]) == 2
    err = capsys.readouterr().err
    assert f"unit 'npu' gives {value} cycles for 1 output channels of 'conv2d in_channels=16 out_channels=16" in err
    assert "SoC 'badsoc'" in err and len(err.strip().splitlines()) == 1
    out = tmp_path / "run"
    assert main(["--plugin", plugin, "search", "--soc", "badsoc", "--model", "resnet8", "--data-limit", "40",
                 "--set", "warmup_epochs=0", "--set", "search_epochs=0", "--set", "finetune_epochs=0",
                 "--out", str(out), "--no-progress"]) == 2
    assert "unit 'npu' gives" in capsys.readouterr().err  # the first bad layer of resnet8
    assert not (out / "result.json").exists()


def test_an_empty_unit_costs_zero_even_where_its_formula_is_infinite_at_zero(tmp_path, capsys):
    plugin = _soc(tmp_path, "1000 / n + n")
    assert main(["--plugin", plugin, "cost", "--soc", "badsoc", "--layer", LAYER, "--split", "cpu=16,npu=0",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["units"]["npu"]["latency_cycles"] == 0.0
    assert report["latency_cycles"] == 16 * 16 * 10
