"""`odimo search` end to end: outputs, resume after SIGKILL, and usage errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from odimo_moo.cli import main

try:
    import onnx
except ImportError:
    onnx = None
ONNX = onnx is not None
NEEDS_ONNX = pytest.mark.skipif(not ONNX, reason="onnx is not installed; ONNX export needs it: "
                                                  "pip install 'odimo-moo[onnx]'")
TINY = ["--soc", "diana", "--model", "resnet8", "--dataset", "digits", "--data-limit", "120", "--device", "cpu",
        "--no-progress", "--set", "warmup_epochs=1", "--set", "search_epochs=2", "--set", "finetune_epochs=1",
        "--set", "batch_size=32"]


def test_search_writes_result_mapping_metrics_and_exports(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", *TINY, "--lambda", "1e-5", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["latency_cycles"] > 0 and result["energy_uj"] > 0
    for name in ("result.json", "mapping.json", "metrics.csv", "metrics.json", "exported.pt", "export_check.json"):
        assert (out / name).is_file(), name
    assert (out / "exported.onnx").is_file() == ONNX  # written exactly when the onnx package is there
    mapping = json.loads((out / "mapping.json").read_text())
    for layer, info in mapping["layers"].items():
        channels = sorted(c for unit in info["units"].values() for c in unit["channels"])
        assert channels == list(range(len(channels))), layer
    assert json.loads((out / "export_check.json").read_text())["max_abs_difference"] <= 1e-4
    phases = [row["phase"] for row in json.loads((out / "metrics.json").read_text())]
    assert phases == ["warmup", "search", "search", "finetune"]


@NEEDS_ONNX
def test_export_command_writes_onnx(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", *TINY, "--out", str(out)]) == 0
    target = tmp_path / "model.onnx"
    assert main(["export", str(out), "--out", str(target)]) == 0
    graph = onnx.load(str(target)).graph
    assert graph.input[0].name == "input" and len(graph.node) > 10
    capsys.readouterr()
    assert main(["export", str(out), "--format", "onnx-qdq", "--check", "digits", "--check-limit", "64",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["format"] == "onnx-qdq" and result["path"].endswith("exported_qdq.onnx")
    assert result["check"]["images"] == 64 and result["check"]["prediction_agreement"] >= 0.99
    with pytest.raises(SystemExit) as usage:
        main(["export", str(out), "--format", "tflite"])
    assert usage.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err


def test_search_resumes_after_sigkill(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "odimo_moo.cli", "search", *TINY, "--set", "search_epochs=4", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "checkpoints" / "search.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), "the run never wrote its first search checkpoint"
    assert not (out / "result.json").exists()
    finished = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    history = json.loads((out / "metrics.json").read_text())
    search_epochs = [row["epoch"] for row in history if row["phase"] == "search"]
    assert search_epochs == [1, 2, 3, 4]


@pytest.mark.parametrize("argv, message", [
    (["search", "--lambda", "-1"], "recipe: lambda must be >= 0, got -1.0"),
    (["search", "--set", "lambda=1"], "--set lambda=...: give lambda with --lambda"),
    (["search", "--soc", "nosuch"], "unknown SoC 'nosuch'"),
    (["search", "--model", "nosuch"], "unknown model 'nosuch'"),
    (["search", "--set", "search_epochs=-2"], "search_epochs must be >= 0"),
    (["search", "--set", "bogus=1"], "unknown training parameter(s) bogus"),
    (["search", "--set", "parametrization=magic"], "parametrization must be one of"),
    (["search", "--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["search", "--soc", "darkside", "--model", "mobilenetv1_tiny", "--image-size", "16"],
     "model 'mobilenetv1_tiny' has no layer that two units of SoC 'darkside' can both run"),
])
def test_search_usage_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "x"), "--data-limit", "50", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_corrupt_checkpoint_is_a_clear_runtime_error(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "search.pt").write_bytes(b"not a checkpoint")
    assert main(["search", *TINY, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "search.pt is unreadable" in err and "delete it" in err and "Traceback" not in err
