"""The study commands' machine-readable output and next steps: ``--json`` on ``run``, ``report`` and
``export`` (one JSON document on stdout, everything else on stderr), the message of a re-run of a
finished study, and a report that reads front trials from the artifact store when their folders are
gone (then ``odimo export`` works on the fetched folder)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import torch
import yaml
from torch import nn

from test_search_cli import NEEDS_ONNX
from test_study_drivers import odimo, toy_config, trials_of


def test_run_json_is_the_only_thing_on_stdout(tmp_path, capsys):
    config = toy_config(tmp_path, trials=2)
    assert odimo("run", str(config), "--json") == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["study"] == "toy" and summary["objectives"] == ["val_accuracy", "latency_cycles"]
    assert summary["trials"] == {"budget": 2, "finished": 2, "ran_now": 2, "states": {"COMPLETE": 2}}
    assert summary["complete"] is True and summary["constraints"] == {}
    assert summary["dashboard"] == (f"optuna-dashboard sqlite:///{tmp_path / 'out' / 'study.db'} "
                                    f"--artifact-dir {tmp_path / 'out' / 'artifacts'}")
    assert [p["trial"] for p in summary["report"]["fronts"]["latency"]["points"]]
    assert summary["report"]["files"]["pareto_json"] == str(tmp_path / "out" / "pareto.json")
    assert "trial 1: " in captured.err and "Pareto front of study 'toy'" in captured.err  # progress: stderr
    results = list((tmp_path / "out" / "trials").rglob("result.json"))
    assert len(results) == 2 and not list((tmp_path / "out" / "trials").rglob("checkpoints/*.pt"))


def test_a_rerun_of_a_finished_study_says_it_is_complete_and_how_to_extend_it(tmp_path, capsys):
    config = toy_config(tmp_path, trials=2)
    assert odimo("run", str(config), "--no-report") == 0
    assert "is complete" not in capsys.readouterr().out
    assert odimo("run", str(config), "--no-report") == 0
    out = capsys.readouterr().out
    assert (f"study toy is complete: its 2 trials are finished and none was left to run; to extend it, run "
            f"`odimo run {config} --set trials=4` (any trials=N above 2)") in out
    assert "browse the study with `optuna-dashboard sqlite:///" in out


def test_report_json_and_front_trials_fetched_from_the_artifact_store(tmp_path, capsys):
    config = toy_config(tmp_path, trials=3)
    assert odimo("run", str(config), "--no-report") == 0
    shutil.rmtree(tmp_path / "out" / "trials")  # reported from a machine without the trial folders
    capsys.readouterr()
    assert odimo("report", str(tmp_path / "out"), "--out", str(tmp_path / "rep"), "--json") == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert "Pareto front of study 'toy'" in captured.err
    points = document["fronts"]["latency"]["points"]
    assert points and document["out"] == str(tmp_path / "rep")
    for point in points:
        folder = tmp_path / "rep" / "trials" / str(point["trial"])
        assert point["work_dir"] == str(folder)
        assert point["artifacts"]["result"] == str(folder / "result.json")
        assert json.loads((folder / "result.json").read_text())["lambda"] == point["lambda"]
        assert (folder / "mapping.png").is_file()
    assert odimo("report", str(tmp_path / "out"), "--out", str(tmp_path / "rep"), "--artifacts",
                 str(tmp_path / "none")) == 0  # no store here: the report still works, paths as stored


def test_report_reads_results_without_the_studys_plugins_or_torch(tmp_path):
    """On a machine without the study's plugin the report still reads the study, and its process
    loads no torch (only the name, output folder and storage of the study file are read)."""
    config = toy_config(tmp_path, trials=2)
    assert odimo("run", str(config), "--no-report") == 0
    stored = tmp_path / "out" / "study.yaml"
    raw = yaml.safe_load(stored.read_text())
    raw["plugins"] = ["a_plugin_this_machine_does_not_have"]
    stored.write_text(yaml.safe_dump(raw))
    script = ("import sys\nfrom odimo_moo.cli import main\n"
              f"assert main(['report', {str(tmp_path / 'out')!r}, '--out', {str(tmp_path / 'rep')!r}]) == 0\n"
              "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "rep" / "pareto.json").read_text())["fronts"]["latency"]["points"]


@NEEDS_ONNX
def test_export_json(tmp_path, capsys):
    folder = tmp_path / "result"
    folder.mkdir()
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), folder / "exported.pt")
    (folder / "mapping.json").write_text(json.dumps({"layers": {"1": {"units": {"digital": {"count": 2}}}}}))
    (folder / "export_check.json").write_text(json.dumps({"input_shape": [4]}))
    assert odimo("export", str(folder), "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"result_dir": str(folder), "format": "onnx-float",
                                        "path": str(folder / "exported.onnx"), "onnx": str(folder / "exported.onnx"),
                                        "check": None, "channel_split": {"1": {"digital": 2}}}
    assert "wrote" in captured.err and (folder / "exported.onnx").is_file()


def test_an_artifact_store_that_refuses_files_costs_no_trial(tmp_path, monkeypatch, capsys):
    import errno

    from odimo_moo.study import artifact_store

    def full(**_: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifact_store, "upload_artifact", full)
    config = toy_config(tmp_path, trials=1)
    assert odimo("run", str(config), "--no-report") == 0
    assert [t.state.name for t in trials_of(tmp_path)] == ["COMPLETE"]
    out = capsys.readouterr().out
    assert "trial 0: could not upload result.json to the artifact store (No space left on device); it stays in" in out
