"""``odimo cost`` and ``odimo plugins``: values computed by hand, output formats, usage errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from odimo_moo.cli import main

ceil = math.ceil
DIANA_LAYER = "conv2d in_channels=16 out_channels=16 kernel_size=3 output_size=32x32"
DIANA_DESCRIBED = "conv2d in_channels=16 out_channels=16 kernel_size=3x3 output_size=32x32 stride=1x1 groups=1"


def run_json(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return json.loads(captured.out)


def run_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    return captured.err


def uj(mw_cycles: float, frequency_hz: float = 260e6) -> float:
    return mw_cycles / frequency_hz * 1e3


def test_diana_split_json(capsys):
    out = run_json(capsys, "cost", "--soc", "diana", "--layer", DIANA_LAYER, "--split", "digital=8,analog=8", "--json")
    t_d = ceil(8 / 16) * 16 * ceil(32 / 16) * 32 * 3 * 3 + 32 * 32 * (8 + 16) / 8  # 12,288
    t_a = 8 * 16 * 3 * 3 + ceil(8 / 512) * ceil(16 / 128) * 32 * 32 / 4 * 70 * 0.26  # 5,811.2
    m = min(t_d, t_a)
    assert out["soc"] == "diana"
    assert out["layer"] == DIANA_DESCRIBED
    assert list(out["units"]) == ["digital", "analog"]
    assert out["units"]["digital"]["channels"] == 8 and out["units"]["analog"]["channels"] == 8
    assert out["units"]["digital"]["latency_cycles"] == pytest.approx(t_d)
    assert out["units"]["analog"]["latency_cycles"] == pytest.approx(t_a)
    assert out["latency_cycles"] == pytest.approx(max(t_d, t_a))
    # per-unit: the additive active + idle approximation (DIANA's idle power is 0)
    assert out["units"]["digital"]["energy_uj"] == pytest.approx(uj(24.96 * t_d))
    assert out["units"]["analog"]["energy_uj"] == pytest.approx(uj(28.74 * t_a))
    # total: DIANA's own model, 42.39 mW while both units run
    assert out["energy_uj"] == pytest.approx(uj(42.39 * m + 28.74 * (t_a - m) + 24.96 * (t_d - m)))


@pytest.mark.parametrize("split, latency", [("digital=16", 13_312), ("analog=16", 5_811.2),
                                            ("digital=16,analog=0", 13_312)])
def test_diana_reference_numbers_from_cli(capsys, split, latency):
    out = run_json(capsys, "cost", "--soc", "diana", "--layer", DIANA_LAYER, "--split", split, "--json")
    assert out["latency_cycles"] == pytest.approx(latency)
    idle_unit = "analog" if "digital=16" in split else "digital"
    assert out["units"][idle_unit] == {"channels": 0, "latency_cycles": 0.0, "energy_uj": 0.0}


def test_darkside_split_json_active_plus_idle(capsys):
    out = run_json(capsys, "cost", "--soc", "darkside", "--split", "cluster=16,dwe=16", "--json",
                   "--layer", "conv2d in_channels=32 out_channels=32 kernel_size=3 output_size=16x16")
    t_c = ceil(16 / 2) * ceil(16 / 8) * (2 * 3 * 3 * 32 + ceil(16 / 4) * (14 * ceil(3 * 3 * 32 / 4) + 15))
    t_d = ceil(16 / 16) * (9 + 9 * 16 + 4 * 16 * 16)
    latency = max(t_c, t_d)
    cluster = 168 * t_c + 1.32 * (latency - t_c)
    dwe = 118 * t_d + 1.32 * (latency - t_d)
    assert out["latency_cycles"] == pytest.approx(latency)
    assert out["units"]["cluster"]["energy_uj"] == pytest.approx(uj(cluster))
    assert out["units"]["dwe"]["energy_uj"] == pytest.approx(uj(dwe))
    assert out["energy_uj"] == pytest.approx(uj(cluster + dwe))


def test_linear_layer(capsys):
    out = run_json(capsys, "cost", "--soc", "diana", "--layer", "linear in_features=128 out_features=64",
                   "--split", "analog=32,digital=32", "--json")
    t_d = ceil(32 / 16) * 128 * ceil(1 / 16) * 1 * 1 * 1 + 1 * 1 * (32 + 128) / 8
    # analog: u = 8 (8*32 <= 512 and (8+0)*128*1 <= 1152)
    t_a = 8 * 128 * 1 * 1 + ceil(32 / 512) * ceil(128 / 128) * 1 * 1 / 8 * 70 * 0.26
    assert out["layer"] == "linear in_features=128 out_features=64"
    assert out["units"]["digital"]["latency_cycles"] == pytest.approx(t_d)
    assert out["units"]["analog"]["latency_cycles"] == pytest.approx(t_a)


def test_text_table(capsys):
    assert main(["cost", "--soc", "diana", "--layer", DIANA_LAYER, "--split", "digital=8,analog=8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"SoC diana, layer: {DIANA_DESCRIBED}"
    assert lines[1].split() == ["unit", "channels", "latency", "[cycles]", "energy", "[uJ]"]
    assert lines[2].split()[:3] == ["digital", "8", "12,288.0"]
    assert lines[3].split()[:3] == ["analog", "8", "5,811.2"]
    assert lines[4].split()[:3] == ["layer", "16", "12,288.0"]
    total = uj(42.39 * 5811.2 + 24.96 * (12288 - 5811.2))
    assert float(lines[4].split()[3]) == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--soc", "diana", "--layer", DIANA_LAYER, "--split", "digital=8,analog=4"],
     "--split: channels add up to 12, but the layer has 16 output channels (units not named get 0)"),
    (["--soc", "diana", "--layer", DIANA_LAYER, "--split", "digital=8,npu=8"],
     "--split: SoC 'diana' has no unit 'npu'; its units are digital, analog"),
    (["--soc", "diana", "--layer", DIANA_LAYER, "--split", "digital:16"],
     "--split: 'digital:16' is not UNIT=N with N a non-negative integer; e.g. --split digital=10,analog=6"),
    (["--soc", "diana", "--layer", DIANA_LAYER, "--split", "digital=-2,analog=18"], "is not UNIT=N"),
    (["--soc", "diana", "--layer", DIANA_LAYER, "--split", "digital=8,digital=8"],
     "--split: unit 'digital' given twice"),
    (["--soc", "tpu9000", "--layer", DIANA_LAYER, "--split", "digital=16"],
     "unknown SoC 'tpu9000'; registered SoCs: darkside, diana, example_npu"),
    (["--soc", "diana", "--split", "analog=16",
      "--layer", "conv2d in_channels=16 out_channels=16 kernel_size=3 output_size=8x8 groups=16"],
     "--split: unit 'analog' of SoC 'diana' cannot run 'conv2d in_channels=16 out_channels=16 kernel_size=3x3 "
     "output_size=8x8 stride=1x1 groups=16'; units that can: digital"),
    (["--soc", "darkside", "--split", "dwe=32",
      "--layer", "conv2d in_channels=16 out_channels=32 kernel_size=3 output_size=8x8"],
     "--split: unit 'dwe' of SoC 'darkside' cannot run"),
    (["--soc", "diana", "--layer", "conv2d in_channels=16 kernel_size=3", "--split", "digital=16"],
     "layer spec: missing out_channels, output_size for conv2d"),
    (["--soc", "diana", "--layer", "conv3d in_channels=1", "--split", "digital=16"],
     "layer spec: unknown layer type 'conv3d'"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, message):
    err = run_error(capsys, "cost", *argv)
    assert err.startswith("odimo cost: error: ")
    assert message in err, err


def test_missing_option_is_an_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["cost", "--soc", "diana", "--layer", DIANA_LAYER])
    assert info.value.code == 2
    assert "the following arguments are required: --split" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["cost", "plugins"])
def test_help(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: odimo {command}")
    assert "--json" in out


def test_cost_help_explains_energy_models(capsys):
    with pytest.raises(SystemExit):
        main(["cost", "--help"])
    out = capsys.readouterr().out
    assert "DIANA" in out and "additive approximation" in out


def test_plugins_json(capsys):
    listing = run_json(capsys, "plugins", "--json")
    assert set(listing) == {"plugins", "socs", "strategies", "models", "heuristics"}
    socs = {soc["name"]: soc for soc in listing["socs"]}
    assert {"diana", "darkside", "example_npu"} <= set(socs)
    diana = socs["diana"]
    assert diana["frequency_hz"] == 260e6 and diana["default_unit"] == "digital"
    assert diana["energy_model"] == "custom (DianaSoC.energy)"
    assert diana["units"] == [
        {"name": "digital", "active_power_mw": 24.96, "idle_power_mw": 0.0,
         "format": {"type": "IntFormat", "weight_bits": 8, "activation_bits": 7, "power_of_two_step": True}},
        {"name": "analog", "active_power_mw": 28.74, "idle_power_mw": 0.0,
         "format": {"type": "TernaryFormat", "activation_bits": 7, "power_of_two_step": True}},
    ]
    assert diana["plugin"] == "diana" and diana["origin"].startswith("entry point odimo_moo.soc_plugins.diana (")
    assert socs["darkside"]["energy_model"] == "active_idle"
    assert socs["example_npu"]["plugin"] == "yaml_socs"
    for section in ("strategies", "models"):
        for item in listing[section]:
            assert set(item) == {"name", "description", "plugin", "origin"}
    for item in listing["heuristics"]:
        assert set(item) == {"name", "description", "plugin", "origin", "soc"}


def test_plugins_text(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "SoCs:" in out and "Strategies:" in out and "Models:" in out and "Heuristic mappings:" in out
    assert "  diana: DIANA" in out
    assert "    unit analog: 28.74 mW active, 0 mW idle, format TernaryFormat activation_bits=7 power_of_two_step=True" in out
    assert "    unit digital: 24.96 mW active, 0 mW idle, format IntFormat weight_bits=8 activation_bits=7 power_of_two_step=True" in out
    assert "    clock 400 MHz, default unit cpu, energy model active_idle" in out


def test_console_script_exit_code_and_one_line_error():
    """The installed `odimo` script maps usage errors to exit 2 (success is checked via `python -m` in
    test_plugins.py); one subprocess keeps the suite fast."""
    script = Path(sys.executable).parent / "odimo"
    assert script.exists(), "the `odimo` console script is not installed next to the interpreter"
    result = subprocess.run([str(script), "cost", "--soc", "diana", "--layer", DIANA_LAYER, "--split", "analog=15"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == ("odimo cost: error: --split: channels add up to 15, but the layer has 16 output "
                             "channels (units not named get 0)\n")
