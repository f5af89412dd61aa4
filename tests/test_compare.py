"""``odimo compare``: hypervolume and iso-accuracy / iso-cost comparisons on hand-made fronts,
reading result files written before, and routing parameters when it runs the methods."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from odimo_moo.cli import main
from odimo_moo.commands.compare import route_parameters
from odimo_moo.compare import build_report, iso_comparison, load_outcomes
from odimo_moo.errors import UsageError
from odimo_moo.pareto import ReferencePoint
from odimo_moo.registry import PluginRegistry
from odimo_moo.strategy import Outcome


def outcome(strategy: str, label: str, accuracy: float, latency: float, wall: float = 1.0) -> Outcome:
    return Outcome(strategy=strategy, accuracy=accuracy, val_accuracy=accuracy, latency_cycles=latency,
                   energy_uj=latency / 100, channel_split={"conv": {"digital": 1, "analog": 1}}, label=label,
                   wall_time_s=wall)


# Hand-made fronts (accuracy, latency):
#   odimo         (0.90, 100) (0.80, 50) (0.70, 80, dominated by (0.80, 50))
#   evolutionary  (0.85, 60) (0.95, 200)
#   heuristic     all:digital (0.88, 150), all:analog (0.60, 40)
ODIMO = [outcome("odimo", "lambda=0", 0.90, 100, 10), outcome("odimo", "lambda=1e-5", 0.80, 50, 20),
         outcome("odimo", "lambda=1e-4", 0.70, 80, 30)]
EVOLUTIONARY = [outcome("evolutionary", "front 1/2", 0.85, 60, 5), outcome("evolutionary", "front 2/2", 0.95, 200, 7)]
HEURISTIC = [outcome("heuristic", "all:digital", 0.88, 150, 2), outcome("heuristic", "all:analog", 0.60, 40, 3)]
REFERENCE = ReferencePoint(accuracy=0.5, cost=250)


def test_iso_comparison_by_hand():
    # vs all:digital (0.88, 150): best accuracy at cost <= 150 is 0.90 (+0.02);
    # lowest cost at accuracy >= 0.88 is 100, so 150 / 100 = 1.5x lower latency at iso-accuracy.
    iso = iso_comparison([0.90, 0.80, 0.70], [100, 50, 80], 0.88, 150)
    assert iso["iso_cost_accuracy"] == 0.90 and iso["iso_cost_accuracy_gain"] == pytest.approx(0.02)
    assert iso["iso_accuracy_cost"] == 100 and iso["iso_accuracy_cost_ratio"] == 1.5
    # vs all:analog (0.60, 40): nothing costs <= 40; the cheapest point as accurate costs 50 (0.8x).
    iso = iso_comparison([0.90, 0.80, 0.70], [100, 50, 80], 0.60, 40)
    assert iso["iso_cost_accuracy"] is None and iso["iso_cost_accuracy_gain"] is None
    assert iso["iso_accuracy_cost"] == 50 and iso["iso_accuracy_cost_ratio"] == 0.8


def test_report_by_hand():
    report = build_report(ODIMO + EVOLUTIONARY + HEURISTIC, "latency", ["heuristic"], REFERENCE)
    rows = {row["method"]: row for row in report["methods"]}
    assert list(rows) == ["odimo", "evolutionary", "heuristic"]
    # Reference (accuracy 0.5, latency 250), area 0.5 * 250 = 125.
    # odimo: [0.5, 0.9] x [100, 250] = 60, [0.5, 0.8] x [50, 250] = 60, overlap [0.5, 0.8] x [100, 250] = 45.
    assert rows["odimo"]["hypervolume"] == pytest.approx(75.0)
    assert rows["odimo"]["hypervolume_fraction"] == pytest.approx(0.6)
    # evolutionary: 0.35 * 190 = 66.5, 0.45 * 50 = 22.5, overlap 0.35 * 50 = 17.5.
    assert rows["evolutionary"]["hypervolume"] == pytest.approx(71.5)
    # heuristic: 0.38 * 100 = 38, 0.1 * 210 = 21, overlap 0.1 * 100 = 10.
    assert rows["heuristic"]["hypervolume"] == pytest.approx(49.0)
    assert rows["odimo"]["front_points"] == 2 and rows["odimo"]["points"] == 3
    assert rows["odimo"]["wall_time_s"] == 60 and rows["odimo"]["trainings"] == 3
    evo = rows["evolutionary"]["vs_baselines"]
    # vs all:digital: at cost <= 150 the best is 0.85 (-0.03); at accuracy >= 0.88 the cheapest costs 200 (0.75x).
    assert evo["all:digital"]["iso_cost_accuracy_gain"] == pytest.approx(-0.03)
    assert evo["all:digital"]["iso_accuracy_cost_ratio"] == pytest.approx(0.75)
    assert evo["all:analog"]["iso_accuracy_cost_ratio"] == pytest.approx(40 / 60)
    assert rows["heuristic"]["vs_baselines"] == {}
    assert report["reference_point"]["latency_cycles"] == 250
    default = build_report(ODIMO + HEURISTIC, "energy", ["heuristic"])
    assert default["reference_point"]["energy_uj"] == pytest.approx(1.1 * 1.5)  # 1.1 x the largest energy


def write_results(folder: Path) -> None:
    """Files as odimo search / run / compare write them, with repeats and nesting."""
    for item in ODIMO[:2]:
        path = folder / "odimo" / item.label.replace("=", "-") / "result.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(item.to_dict()))
    study = folder / "study"
    study.mkdir()
    (study / "results.json").write_text(json.dumps(
        {"study": "s", "trials": [{"number": 0, "outcome": ODIMO[2].to_dict()},
                                  {"number": 1, "outcome": ODIMO[0].to_dict()}]}))
    (study / "pareto.json").write_text(json.dumps([ODIMO[1].to_dict()]))
    (folder / "evolutionary").mkdir()
    (folder / "evolutionary" / "results.json").write_text(json.dumps(
        [{**o.to_dict(), "extra": "ignored"} for o in EVOLUTIONARY]))
    (folder / "heuristic").mkdir()
    (folder / "heuristic" / "baselines.json").write_text(json.dumps([o.to_dict() for o in HEURISTIC]))


def test_load_outcomes_reads_nested_files_once(tmp_path):
    write_results(tmp_path)
    found = load_outcomes(tmp_path)
    assert sorted((o.strategy, o.label) for o in found) == sorted(
        (o.strategy, o.label) for o in ODIMO + EVOLUTIONARY + HEURISTIC)


def test_compare_from_files_writes_the_report(tmp_path, capsys):
    write_results(tmp_path / "in")
    out = tmp_path / "out"
    code = main(["compare", "--metric", "latency", "--from", str(tmp_path / "in"), "--reference", "0.5,250",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "odimo" in printed and "(1.50x)" in printed and "accuracy=0.5, latency_cycles=250" in printed
    report = json.loads((out / "compare.json").read_text())
    rows = {row["method"]: row for row in report["methods"]}
    assert rows["odimo"]["hypervolume"] == pytest.approx(75.0)
    assert rows["odimo"]["vs_baselines"]["all:digital"]["iso_accuracy_cost_ratio"] == 1.5
    header = (out / "compare.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["method", "points", "front_points", "hypervolume"]
    assert "iso_accuracy_cost_ratio[all:digital]" in header
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    baselines = json.loads((out / "baselines.json").read_text())
    assert [Outcome.from_dict(b).label for b in baselines] == ["all:digital", "all:analog"]


def test_compare_usage_errors(tmp_path, capsys):
    assert main(["compare", "--from", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    write_results(tmp_path / "in")
    assert main(["compare", "--from", str(tmp_path / "in"), "--methods", "odimo,nsga3", "--out", str(tmp_path)]) == 2
    assert "no results for method(s) nsga3" in capsys.readouterr().err
    assert main(["compare", "--from", str(tmp_path / "in"), "--reference", "x"]) == 2


def test_parameters_go_to_the_methods_that_have_them():
    strategies = {name: entry.obj for name, entry in PluginRegistry.load().strategies().items()
                  if name in ("odimo", "evolutionary")}
    routed = route_parameters({"finetune_epochs": 2, "evaluations": 30, "evolutionary.population": 8}, strategies)
    assert routed == {"odimo": {"finetune_epochs": 2},
                      "evolutionary": {"finetune_epochs": 2, "evaluations": 30, "population": 8}}
    for bad in ({"odimo.evaluations": 1}, {"no_such_key": 1}, {"nsga3.population": 2}):
        with pytest.raises(UsageError):
            route_parameters(bad, strategies)


FAKE_PLUGIN = '''
from odimo_moo.hookspecs import hookimpl
from odimo_moo.strategy import Outcome, Strategy


class Swept(Strategy):
    name = "swept"

    def defaults(self):
        return {"cost_weight": 0.0}

    def run(self, bench, params, workdir):
        weight = float(params["cost_weight"])
        return [Outcome("swept", 0.9 - weight, 0.9, 100.0 - 10 * weight, 1.0, {}, dict(params),
                        label=f"lambda={weight:g}", wall_time_s=2.0)]


class Fixed(Strategy):
    name = "fixed"

    def run(self, bench, params, workdir):
        return [Outcome("fixed", 0.85, 0.85, 120.0, 1.0, {}, label="manual", wall_time_s=1.0)]


@hookimpl
def odimo_register_strategies():
    return [Swept(), Fixed()]
'''


def test_compare_runs_lambda_methods_once_per_lambda(tmp_path, capsys):
    plugin = tmp_path / "fake_strategies.py"
    plugin.write_text(textwrap.dedent(FAKE_PLUGIN))
    out = tmp_path / "out"
    code = main(["--plugin", str(plugin), "compare", "--methods", "swept,fixed", "--baselines", "fixed",
                 "--lambdas", "0,1,2", "--out", str(out), "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in results] == ["lambda=0", "lambda=1", "lambda=2", "manual"]
    report = json.loads((out / "compare.json").read_text())
    swept = report["methods"][0]
    assert swept["trainings"] == 3 and swept["wall_time_s"] == 6.0
    # vs manual (0.85, 120): lambda=0 (0.9, 100) is more accurate and 1.2x cheaper.
    assert swept["vs_baselines"]["manual"]["iso_accuracy_cost_ratio"] == pytest.approx(1.2)
    assert load_outcomes(out)  # a compare folder can be read back with --from
