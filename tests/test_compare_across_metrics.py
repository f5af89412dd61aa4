"""A fixed mapping trains the same whatever cost a run reports: the warmup and a fixed mapping's
training are keyed without the metric, and ``odimo compare`` reuses a metric-free strategy's finished
units (the heuristics) in a run of another metric."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

from odimo_moo.cli import main
from odimo_moo.strategy import Outcome

PROBE = '''
import os
from odimo_moo.hookspecs import hookimpl
from odimo_moo.strategy import Outcome, Strategy


def log(name, bench):
    with open(os.environ["ODIMO_TEST_RUNS"], "a") as handle:
        handle.write(f"{name} {bench.setup.metric}\\n")


class CostProbe(Strategy):
    name = "costprobe"

    def run(self, bench, params, workdir):
        log(self.name, bench)
        return [Outcome("costprobe", 0.6, 0.6, 90.0, 1.0, {}, label="searched", seed=bench.setup.seed)]


class FreeProbe(Strategy):
    name = "freeprobe"
    uses_metric = False

    def run(self, bench, params, workdir):
        log(self.name, bench)
        return [Outcome("freeprobe", 0.5, 0.5, 95.0, 2.0, {}, label="manual", seed=bench.setup.seed)]


@hookimpl
def odimo_register_strategies():
    return [CostProbe(), FreeProbe()]
'''


def _compare(plugin: Path, out: Path, metric: str) -> int:
    return main(["--plugin", str(plugin), "compare", "--methods", "costprobe,freeprobe", "--baselines", "freeprobe",
                 "--metric", metric, "--out", str(out)])


def test_a_metric_free_unit_of_a_latency_run_serves_an_energy_run(tmp_path, monkeypatch, capsys):
    plugin = tmp_path / "probes.py"
    plugin.write_text(textwrap.dedent(PROBE))
    log = tmp_path / "runs.log"
    monkeypatch.setenv("ODIMO_TEST_RUNS", str(log))
    assert _compare(plugin, tmp_path / "latency", "latency") == 0
    for method in ("costprobe", "freeprobe"):
        shutil.copytree(tmp_path / "latency" / "seed-0" / method, tmp_path / "energy" / "seed-0" / method)
    capsys.readouterr()
    assert _compare(plugin, tmp_path / "energy", "energy") == 2  # the cost-driven unit is not reusable
    assert "holds finished results of other settings (setup differ)" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "energy" / "seed-0" / "costprobe")
    assert _compare(plugin, tmp_path / "energy", "energy") == 0
    assert log.read_text().splitlines() == ["costprobe latency", "freeprobe latency", "costprobe energy"]
    results = json.loads((tmp_path / "energy" / "results.json").read_text())
    assert {Outcome.from_dict(o).strategy for o in results} == {"costprobe", "freeprobe"}


def _heuristic(out: Path, metric: str) -> Outcome:
    assert main(["compare", "--methods", "heuristic", "--baselines", "heuristic", "--metric", metric,
                 "--data-limit", "60", "--device", "cpu", "--no-progress", "--set", "warmup_epochs=1",
                 "--set", "search_epochs=1", "--set", "finetune_epochs=1", "--set", "batch_size=32",
                 "--set", "heuristic.mapping=balanced", "--out", str(out)]) == 0
    [outcome] = [Outcome.from_dict(o) for o in json.loads((out / "results.json").read_text())]
    return outcome


def test_a_fixed_mapping_trains_the_same_for_latency_and_energy(tmp_path):
    latency, energy = _heuristic(tmp_path / "latency", "latency"), _heuristic(tmp_path / "energy", "energy")
    assert (latency.accuracy, latency.val_accuracy, latency.channel_split) == (
        energy.accuracy, energy.val_accuracy, energy.channel_split)
    assert (latency.latency_cycles, latency.energy_uj) == (energy.latency_cycles, energy.energy_uj)
    keys = [json.loads((out / "seed-0" / "warmup.json").read_text())["warmups"][0]["key"]
            for out in (tmp_path / "latency", tmp_path / "energy")]
    assert keys[0] == keys[1]
