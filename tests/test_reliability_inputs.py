"""Reliability, bad input: every malformed input gives ONE clear message naming the problem and exit
code 2 (usage) or 1 (runtime), never a traceback.

The corpus lives in tests/bad_inputs/ (one file per case, its expectation on its first line); the
cases that need a folder or a flag are tables here. Everything runs in-process through
``odimo_moo.cli.main`` except a few checks of the real ``odimo`` console script.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from odimo_moo import cli
from odimo_moo.cli import main
from odimo_moo.registry import PluginRegistry

CORPUS = Path(__file__).parent / "bad_inputs"
EXPECT = re.compile(r"^# expect: ([12]) (.+)$")
ODIMO = Path(sys.executable).parent / "odimo"
# no training happens in this file: every case fails before (or at) the first batch
QUICK = ["--data-limit", "60", "--device", "cpu", "--no-progress", "--set", "warmup_epochs=0",
         "--set", "search_epochs=0", "--set", "finetune_epochs=0", "--set", "batch_size=32"]


def expectation(path: Path) -> tuple[int, str]:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    match = EXPECT.match(first)
    assert match, f"{path} must start with '# expect: EXIT_CODE MESSAGE'"
    return int(match.group(1)), match.group(2)


def corpus(folder: str) -> list[Path]:
    files = sorted((CORPUS / folder).iterdir())
    assert files, f"empty corpus folder {folder}"
    return files


def check_clean_error(capsys, argv: list[str], code: int, fragment: str, one_line: bool = True) -> str:
    """Run ``odimo argv``; assert the exit code, the fragment, one message and no traceback."""
    assert main(argv) == code
    captured = capsys.readouterr()
    err = captured.err
    assert fragment in err, err
    assert "Traceback" not in err and "internal error" not in err, err
    command = next(arg for arg in argv if arg in cli.COMMAND_MODULES)
    assert err.startswith(f"odimo {command}: error: "), err
    if one_line:
        assert err.count("\n") == 1, err
    return err


# -- corpus files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", corpus("study"), ids=lambda p: p.stem)
def test_bad_study_files(path: Path, tmp_path: Path, capsys):
    code, fragment = expectation(path)
    err = check_clean_error(capsys, ["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"], code,
                            fragment, one_line=False)
    # a validation report is one block: a headline naming the file, then one line per problem
    assert str(path) in err.splitlines()[0], err
    assert not (tmp_path / "out").exists(), "a rejected study must not create its output folder"


def test_bad_study_file_in_report(capsys):
    path = CORPUS / "study" / "broken_yaml.yaml"
    code, fragment = expectation(path)
    check_clean_error(capsys, ["report", str(path)], code, fragment, one_line=False)


def test_report_checks_only_where_the_results_are(capsys):
    """A report reads results: a study file naming an unknown SoC, model, dataset and strategy is not
    checked against the plugins, the report says where the results it looked for are missing."""
    path = CORPUS / "study" / "unknown_names.yaml"
    check_clean_error(capsys, ["report", str(path)], 2, "no study database at")


def test_unknown_names_are_all_reported_at_once(capsys):
    path = CORPUS / "study" / "unknown_names.yaml"
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: 4 problems:" in err
    for line in ("soc: unknown SoC 'tpu9000'", "model: unknown model 'resnet1000'",
                 "dataset: unknown dataset 'svhn'", "strategy: unknown strategy 'annealing'"):
        assert f"\n  {line}" in err, err


@pytest.mark.parametrize("path", corpus("soc"), ids=lambda p: p.stem)
def test_bad_yaml_soc_files(path: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the unsafe formulas would create ./odimo_pwned if evaluated
    code, fragment = expectation(path)
    err = check_clean_error(capsys, ["--plugin", str(path), "plugins"], code, fragment)
    assert f"plugin '{path}'" in err
    assert not (tmp_path / "odimo_pwned").exists()


@pytest.mark.parametrize("path", corpus("plugin"), ids=lambda p: p.stem)
def test_bad_python_plugins(path: Path, capsys):
    code, fragment = expectation(path)
    err = check_clean_error(capsys, ["--plugin", str(path), "plugins"], code, fragment)
    assert str(path) in err


def test_bad_plugin_through_the_console_script(tmp_path: Path):
    """The real `odimo` script: a plugin failing at import while `odimo search` starts."""
    path = CORPUS / "plugin" / "fails_at_import.py"
    result = subprocess.run([str(ODIMO), "--plugin", str(path), "search", "--out", str(tmp_path / "o"), *QUICK],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("odimo search: error: plugin ") and result.stderr.count("\n") == 1
    assert "ZeroDivisionError: division by zero" in result.stderr and "Traceback" not in result.stderr


# -- command-line cases ---------------------------------------------------------------------------

CONV = "conv2d in_channels=16 out_channels=16 kernel_size=3 output_size=8x8"
COST_CASES = [
    (["--split", "digital=8,analog=9"], "--split: channels add up to 17, but the layer has 16"),
    (["--split", "digital=8,analog=8,digital=0"], "unit 'digital' given twice"),
    (["--split", ""], "'' is not UNIT=N"),
    (["--split", "digital=1e1,analog=6"], "'digital=1e1' is not UNIT=N"),
    (["--split", "digital=0x10"], "'digital=0x10' is not UNIT=N"),
    (["--split", "=16"], "'=16' is not UNIT=N"),
    (["--split", "digital=99999999999999999999999"], "channels add up to 99999999999999999999999"),
]


@pytest.mark.parametrize("extra, fragment", COST_CASES, ids=[c[0][1] or "empty" for c in COST_CASES])
def test_cost_bad_splits(capsys, extra, fragment):
    check_clean_error(capsys, ["cost", "--soc", "diana", "--layer", CONV, *extra], 2, fragment)


LAYER_CASES = [
    ("conv2d in_channels=16 out_channels=16 kernel_size=3 output_size=8x8 groups=3",
     "groups=3 must divide in_channels=16"),
    ("conv2d in_channels=0 out_channels=16 kernel_size=3 output_size=8x8", "in_channels must be a positive integer"),
    ("conv2d in_channels=16 out_channels=16 kernel_size=3x output_size=8x8", "kernel_size='3x' is not"),
    ("conv2d in_channels=16 out_channels=16 kernel_size=3 output_size=8x8 dilation=2", "unknown key(s) dilation"),
    ("linear in_features=-4 out_features=16", "in_features='-4' is not a positive integer"),
    ("   ", "layer spec is empty"),
    # a layer the SoC cannot run on the units named
    ("conv2d in_channels=16 out_channels=16 kernel_size=3 output_size=8x8 groups=16",
     "unit 'analog' of SoC 'diana' cannot run"),
]


@pytest.mark.parametrize("layer, fragment", LAYER_CASES, ids=[c[1][:30] for c in LAYER_CASES])
def test_cost_bad_layers(capsys, layer, fragment):
    check_clean_error(capsys, ["cost", "--soc", "diana", "--layer", layer, "--split", "digital=8,analog=8"], 2,
                      fragment)


def test_cost_layer_no_unit_of_a_yaml_soc_can_run(capsys):
    soc = CORPUS / "support" / "linear_only.yaml"
    check_clean_error(capsys, ["--plugin", str(soc), "cost", "--soc", "linear_only", "--layer", CONV,
                               "--split", "mcu=16"], 2, "unit 'mcu' of SoC 'linear_only' cannot run")


SEARCH_CASES = [
    (["--set", "search_epochs=2.5"], 2, "training parameter search_epochs=2.5 must be an integer"),
    (["--set", "warmup_epochs=true"], 2, "training parameter warmup_epochs=True must be an integer"),
    (["--set", "finetune_epochs=-1"], 2, "recipe: finetune_epochs must be >= 0, got -1"),
    (["--set", "weight_decay=-1"], 2, "recipe: weight_decay must be >= 0, got -1.0"),
    (["--set", "lr=0"], 2, "recipe: lr must be > 0, got 0.0"),
    (["--set", "lr=.nan"], 2, "training parameter lr=nan must be a number"),
    (["--set", "batch_size=0"], 2, "recipe: batch_size must be >= 1, got 0"),
    (["--set", "lambda_ramp=2"], 2, "recipe: lambda_ramp must be in [0, 1], got 2.0"),
    (["--set", "init=middle"], 2, "recipe: init must be one of first, balanced, random, got 'middle'"),
    (["--set", "lr"], 2, "--set 'lr': expected KEY=VALUE"),
    (["--set", "lr=[1"], 2, "--set 'lr=[1': value is not valid YAML"),
    (["--lambda", "-0.5"], 2, "recipe: lambda must be >= 0, got -0.5"),
    (["--lambda", "nan"], 2, "training parameter lambda=nan must be a number"),
    (["--lambda", "inf"], 2, "training parameter lambda=inf must be a number"),
    (["--data-limit", "0"], 2, "limit must be a positive number of samples per split, got 0"),
    (["--soc", "tpu9000"], 2, "unknown SoC 'tpu9000'; registered SoCs: darkside, diana, example_npu"),
    (["--model", "resnet1000"], 2, "unknown model 'resnet1000'"),
    (["--strategy", "annealing"], 2, "unknown strategy 'annealing'"),
    (["--dataset", "svhn"], 2, "unknown dataset 'svhn'; known datasets: digits, mnist"),
    (["--exclude", "conv99"], 2, "cannot exclude unknown layer(s) conv99"),
]


@pytest.mark.parametrize("extra, code, fragment", SEARCH_CASES, ids=[c[2][:40] for c in SEARCH_CASES])
def test_search_bad_arguments(tmp_path: Path, capsys, extra, code, fragment):
    check_clean_error(capsys, ["search", "--out", str(tmp_path / "o"), *QUICK, *extra], code, fragment)


def test_search_soc_that_cannot_run_the_model(tmp_path: Path, capsys):
    soc = CORPUS / "support" / "linear_only.yaml"
    check_clean_error(capsys, ["--plugin", str(soc), "search", "--soc", "linear_only", "--out", str(tmp_path / "o"),
                               *QUICK], 2, "SoC 'linear_only': no unit can run layer 'conv2d")


# -- datasets in the wrong format -----------------------------------------------------------------

def _mnist_garbage(root: Path) -> None:
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03 not an idx file"))
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"nope"))


def _mnist_half(root: Path) -> None:
    (root / "t10k-images-idx3-ubyte").write_bytes(b"")


def _cifar_garbage(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"\x80\x04this is not a pickle")


def _cifar_wrong_dict(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps({"pixels": [1, 2, 3]}))


def _cifar100_layout_for_cifar10(root: Path) -> None:
    (root / "cifar-100-python").mkdir()
    for name in ("train", "test", "meta"):
        (root / "cifar-100-python" / name).write_bytes(b"")


def _imagenet_flat(root: Path) -> None:
    (root / "train").mkdir()
    (root / "train" / "0001.JPEG").write_bytes(b"")


def _imagenet_corrupt_images(root: Path) -> None:
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            (root / split / label).mkdir(parents=True)
            for i in range(2):
                (root / split / label / f"{i}.JPEG").write_bytes(b"\xff\xd8 truncated jpeg")


DATASET_CASES = [
    ("mnist", _mnist_garbage, 2, "is not a valid MNIST IDX file"),
    ("mnist", _mnist_half, 2, "has only half of the t10k split: t10k-labels-idx1-ubyte[.gz] is missing"),
    ("mnist", lambda root: None, 2, "no MNIST IDX files found in"),
    ("cifar10", _cifar_garbage, 2, "does not hold valid CIFAR pickles"),
    ("cifar10", _cifar_wrong_dict, 2, "does not hold valid CIFAR pickles"),
    ("cifar10", _cifar100_layout_for_cifar10, 2, "cifar10 not found in"),
    ("imagenet", _imagenet_flat, 2, "is not an image-folder tree"),
    # the layout is right but the files are not images: found when the first batch is read
    ("imagenet", _imagenet_corrupt_images, 1, "cannot identify image file"),
]


@pytest.mark.parametrize("dataset, make, code, fragment", DATASET_CASES,
                         ids=[f"{c[0]}-{c[1].__name__.strip('_')}" for c in DATASET_CASES])
def test_dataset_folder_in_the_wrong_format(tmp_path: Path, capsys, dataset, make, code, fragment):
    root = tmp_path / "data"
    root.mkdir()
    make(root)
    extra = ["--set", "warmup_epochs=1"] if code == 1 else []
    check_clean_error(capsys, ["search", "--dataset", dataset, "--data-root", str(root), "--out", str(tmp_path / "o"),
                               *QUICK, *extra], code, fragment)


# -- missing and corrupt checkpoints and results --------------------------------------------------

def _truncated_checkpoint(path: Path) -> None:
    torch.save({"model": {"w": torch.zeros(4096)}, "epoch": 1}, path)
    path.write_bytes(path.read_bytes()[:1000])


CHECKPOINT_CASES = [
    ("empty", lambda p: p.write_bytes(b""), "is unreadable"),
    ("truncated", _truncated_checkpoint, "is unreadable"),
    # the float opcode 'F' makes the unpickler quote the bytes up to the next newline in its message
    ("garbage", lambda p: p.write_bytes(b"F\x0b\x0c\r\x1c\x85\x93\x00\nZ" + bytes(range(256))), "is unreadable"),
    ("not_odimo", lambda p: torch.save([1, 2, 3], p), "is not an odimo-moo checkpoint"),
    ("other_layout", lambda p: torch.save({"model": {"conv9.weight": torch.zeros(1)}, "epoch": 1}, p),
     "does not fit this run (RuntimeError: Error(s) in loading state_dict"),
]


@pytest.mark.parametrize("name, make, fragment", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_corrupt_checkpoint(tmp_path: Path, capsys, name, make, fragment):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    path = out / "checkpoints" / "search.pt"
    make(path)
    err = check_clean_error(capsys, ["search", "--out", str(out), *QUICK], 1, fragment)
    assert str(path) in err and err.rstrip().endswith("delete it to restart that phase")
    assert err.rstrip("\n").isprintable()


def test_export_missing_and_corrupt_results(tmp_path: Path, capsys):
    check_clean_error(capsys, ["export", str(tmp_path / "nowhere")], 2, "is not a result folder")
    (tmp_path / "exported.pt").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "mapping.json").write_text("{}")
    check_clean_error(capsys, ["export", str(tmp_path)], 1, f"cannot read {tmp_path}")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "exported.pt")
    (tmp_path / "mapping.json").write_text("{ not json")
    check_clean_error(capsys, ["export", str(tmp_path)], 1, "JSONDecodeError")


def test_report_without_a_study(tmp_path: Path, capsys):
    check_clean_error(capsys, ["report", str(tmp_path)], 2, "is not an `odimo run` output folder (no study.yaml)")
    check_clean_error(capsys, ["report", "--storage", f"sqlite:///{tmp_path / 'none.db'}"], 2, "no study database")


# -- how errors that are not the user's reach the user -------------------------------------------

def _raising_handler(exc: BaseException):
    def handler(args):
        raise exc
    return handler


def _patch_plugins_handler(monkeypatch, exc: BaseException) -> None:
    original = cli.build_parser

    def build():
        parser = original()
        parser._subparsers._group_actions[0].choices["plugins"].set_defaults(handler=_raising_handler(exc))
        return parser

    monkeypatch.setattr(cli, "build_parser", build)


def test_a_bug_is_one_line_with_a_debug_hint(monkeypatch, capsys):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    _patch_plugins_handler(monkeypatch, ZeroDivisionError("float division by zero\nsecond line"))
    assert main(["plugins"]) == 1
    err = capsys.readouterr().err
    assert err == ("odimo plugins: internal error: ZeroDivisionError: float division by zero (this is a bug; "
                   "re-run with ODIMO_DEBUG=1 for the traceback and report it)\n")


def test_debug_env_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    _patch_plugins_handler(monkeypatch, ZeroDivisionError("boom"))
    with pytest.raises(ZeroDivisionError, match="boom"):  # uncaught: Python prints it and exits 1
        main(["plugins"])
    # usage errors keep their message and exit code, with the traceback printed before it
    monkeypatch.undo()
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    assert main(["cost", "--soc", "diana", "--layer", CONV, "--split", "digital=1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1].startswith("odimo cost: error: --split: channels add up to 1")


def test_system_errors_are_runtime_errors_not_bugs(monkeypatch, capsys):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    _patch_plugins_handler(monkeypatch, OSError(28, "No space left on device"))
    assert main(["plugins"]) == 1
    assert capsys.readouterr().err == "odimo plugins: error: [Errno 28] No space left on device\n"


def test_console_script_reports_a_bug_in_one_line(tmp_path: Path):
    """The real script, with a bug inside a user's strategy plugin (ODIMO_DEBUG is tested in-process)."""
    plugin = tmp_path / "buggy.py"
    plugin.write_text("from odimo_moo import hookimpl\nfrom odimo_moo.strategy import Strategy\n\n"
                      "class Buggy(Strategy):\n    name = 'buggy'\n\n    def run(self, bench, params, workdir):\n"
                      "        return [None][1]\n\n\n@hookimpl\ndef odimo_register_strategies():\n"
                      "    return [Buggy()]\n")
    env = {k: v for k, v in os.environ.items() if k != cli.DEBUG_ENV}
    result = subprocess.run([str(ODIMO), "--plugin", str(plugin), "search", "--strategy", "buggy",
                             "--out", str(tmp_path / "o"), *QUICK], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 1
    assert result.stderr == ("odimo search: internal error: IndexError: list index out of range (this is a bug; "
                             "re-run with ODIMO_DEBUG=1 for the traceback and report it)\n")


# -- observer hooks cannot stop the work -----------------------------------------------------------

def test_observer_hook_that_raises_is_reported_once_and_ignored(tmp_path: Path, capsys):
    plugin = tmp_path / "noisy.py"
    plugin.write_text("from odimo_moo import hookimpl\nCALLS = []\n\n@hookimpl\n"
                      "def odimo_phase_end(phase, epoch, metrics):\n    CALLS.append(epoch)\n"
                      "    raise ConnectionError('dashboard unreachable')\n\n@hookimpl\n"
                      "def odimo_trial_end(study_name, trial_number, result):\n    raise ValueError(result['x'])\n")
    registry = PluginRegistry.load([str(plugin)], entry_points=False)
    for epoch in (1, 2, 3):
        registry.notify("odimo_phase_end", phase="search", epoch=epoch, metrics={})
    registry.notify("odimo_trial_end", study_name="s", trial_number=0, result={"x": 1})
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0] == (f"odimo: warning: plugin '{plugin}' (file {plugin.resolve()}) raised in odimo_phase_end: "
                      f"ConnectionError: dashboard unreachable; the run goes on without this observer")
    assert "raised in odimo_trial_end: ValueError: 1" in err[1]
    module = next(m for m in sys.modules.values() if getattr(m, "__file__", None) == str(plugin.resolve()))
    assert module.CALLS == [1], "a failed observer is not called again"
