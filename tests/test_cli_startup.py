"""The ``odimo`` entry point: --help and --version without torch, each command's parser built only when
it is used, --threads reaching PyTorch before any work, and the exit codes --help documents (130 on
Ctrl-C, through the real console script)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from odimo_moo import cli
from odimo_moo.cli import main

ODIMO = Path(sys.executable).parent / "odimo"

# Records the PyTorch threads the strategy runs with, then (ODIMO_TEST_CTRL_C) sends itself SIGINT.
PROBE = '''
import json, os, signal
import torch
from odimo_moo import hookimpl
from odimo_moo.strategy import Outcome, Strategy


class ThreadProbe(Strategy):
    name = "threadprobe"

    def run(self, bench, params, workdir):
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "threads.json").write_text(json.dumps(
            {"intra": torch.get_num_threads(), "interop": torch.get_num_interop_threads()}))
        if os.environ.get("ODIMO_TEST_CTRL_C"):
            # a shell starting the tests in the background ignores SIGINT in its children: restore
            # Python's own handler, as a terminal's Ctrl-C would find it
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.kill(os.getpid(), signal.SIGINT)
        return [Outcome("threadprobe", 0.5, 0.5, 100.0, 1.0, {}, label="probe", seed=bench.setup.seed)]


@hookimpl
def odimo_register_strategies():
    return [ThreadProbe()]
'''


@pytest.fixture()
def probe(tmp_path: Path) -> Path:
    plugin = tmp_path / "thread_probe.py"
    plugin.write_text(textwrap.dedent(PROBE))
    return plugin


def command_argv(command: str, out: Path) -> list[str]:
    """A run of ``command`` (search or compare) whose only method is the probe: no data, no training."""
    if command == "search":
        return ["search", "--strategy", "threadprobe", "--out", str(out), "--device", "cpu", "--no-progress"]
    return ["compare", "--methods", "threadprobe", "--baselines", "threadprobe", "--out", str(out),
            "--device", "cpu", "--no-progress"]


def test_help_lists_every_command_and_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for name, help_text in cli.COMMANDS.items():
        assert name in text and help_text.split()[0] in text
    for code, meaning in cli.EXIT_CODES:
        assert f"  {code:<4} {meaning}" in text


def test_version_is_the_installed_distribution(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"odimo {importlib.metadata.version('odimo-moo')}\n"


def test_each_command_module_builds_its_parser_with_the_listed_help():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == set(cli.COMMANDS) == set(cli.COMMAND_MODULES)
    for name in cli.COMMANDS:  # building raises RuntimeError if the module's help differs from COMMANDS
        assert commands[name].prog == f"odimo {name}"


def test_help_and_version_do_not_import_torch():
    """Every command's --help, in one fresh process."""
    script = textwrap.dedent('''
        import sys
        import odimo_moo.commands.common  # the --threads and --set helpers, for odimo run too
        from odimo_moo.cli import main
        for argv in (["--help"], ["--version"], ["plugins", "--help"], ["cost", "--help"], ["export", "--help"],
                     ["run", "--help"], ["report", "--help"], ["search", "--help"], ["compare", "--help"]):
            try:
                main(argv)
            except SystemExit as exc:
                assert exc.code == 0, (argv, exc.code)
        heavy = sorted(m for m in ("torch", "torchvision", "sklearn", "matplotlib", "optuna", "pymoo")
                       if m in sys.modules)
        assert not heavy, heavy
    ''')
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_plugins_lists_everything_without_importing_torch():
    """`odimo plugins` builds every registered SoC, strategy, model and heuristic in one fresh process
    without importing torch or any other heavy library: they are imported when a cost is computed, a
    model built or a strategy run."""
    script = textwrap.dedent('''
        import contextlib, io, json, sys
        from odimo_moo.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["plugins", "--json"]) == 0
        listing = json.loads(out.getvalue())
        heavy = sorted(m for m in ("torch", "torchvision", "numpy", "scipy", "sklearn", "matplotlib", "optuna",
                                   "pymoo") if m in sys.modules)
        print(json.dumps({"heavy": heavy, "listing": listing}))
    ''')
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["heavy"] == []
    listing = report["listing"]
    assert {"darkside", "diana", "example_npu"} <= {soc["name"] for soc in listing["socs"]}
    assert {"odimo", "evolutionary", "random_mapping", "heuristic"} <= {s["name"] for s in listing["strategies"]}
    assert {"resnet20", "mobilenetv1_darkside_tiny"} <= {m["name"] for m in listing["models"]}
    assert [h["name"] for h in listing["heuristics"]] == ["first_last_digital"]
    diana = next(soc for soc in listing["socs"] if soc["name"] == "diana")
    assert diana["units"][1]["format"] == {"type": "TernaryFormat", "activation_bits": 7, "power_of_two_step": True}
    assert diana["energy_model"].startswith("custom (DianaSoC.energy")


@pytest.mark.parametrize("command", ["search", "compare"])
def test_threads_reach_torch_before_the_strategy_runs(tmp_path: Path, probe: Path, command: str):
    torch.set_num_threads(1)
    out = tmp_path / "out"
    assert main(["--plugin", str(probe), *command_argv(command, out), "--threads", "2"]) == 0
    assert json.loads(next(out.rglob("threads.json")).read_text())["intra"] == 2
    torch.set_num_threads(2)
    assert main(["--plugin", str(probe), *command_argv(command, tmp_path / "default")]) == 0
    assert json.loads(next((tmp_path / "default").rglob("threads.json")).read_text())["intra"] == 1


@pytest.mark.parametrize("command", ["search", "compare"])
@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", ""])
def test_bad_thread_counts_are_usage_errors(tmp_path: Path, capsys, command: str, value: str):
    with pytest.raises(SystemExit) as done:
        main([*command_argv(command, tmp_path / "out"), "--threads", value])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--threads" in err and "whole number of threads >= 1" in err, err
    assert not (tmp_path / "out").exists()


def test_console_script_sets_both_thread_pools_and_exits_130_on_ctrl_c(tmp_path: Path, probe: Path):
    """A fresh process: --threads sets the intra-op and the inter-op pool; SIGINT during the work
    exits 130 with one line, after the work done so far."""
    out = tmp_path / "out"
    env = {**os.environ, "ODIMO_TEST_CTRL_C": "1"}
    result = subprocess.run([str(ODIMO), "--plugin", str(probe), *command_argv("search", out), "--threads", "3"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 130, result.stderr
    assert result.stderr == "odimo search: interrupted; finished results are kept on disk\n"
    assert json.loads((out / "threads.json").read_text()) == {"intra": 3, "interop": 3}
