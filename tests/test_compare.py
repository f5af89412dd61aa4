"""``odimo compare``: hypervolume and iso-accuracy / iso-cost comparisons on hand-made fronts,
reading result files written before, and routing parameters when it runs the methods."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from odimo_moo.cli import main
from odimo_moo.commands.compare_plan import route_parameters
from odimo_moo.compare import (build_report, format_table, iso_comparison, load_outcomes, median_attainment,
                               separated, spread)
from odimo_moo.errors import UsageError
from odimo_moo.pareto import ReferencePoint
from odimo_moo.registry import PluginRegistry
from odimo_moo.results import results_section, section_key, update_results_file
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
    assert rows["odimo"]["wall_time_s"] == 60 and rows["odimo"]["compute"]["wall_s"] == 60
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


def test_reading_results_back_does_not_import_torch(tmp_path):
    """``odimo compare --from`` (report, one-shot hypervolume trace, plot) in a fresh process: no torch."""
    write_results(tmp_path / "in")
    points = [{"val_accuracy": 0.6, "latency_cycles": 200.0, "evaluation": 1, "seconds": 0.5},
              {"val_accuracy": 0.8, "latency_cycles": 150.0, "evaluation": 2, "seconds": 1.0}]
    (tmp_path / "in" / "evolutionary" / "search.json").write_text(json.dumps(
        {"strategy": "evolutionary", "metric": "latency", "points": points}))
    out = tmp_path / "out"
    script = textwrap.dedent(f'''
        import sys
        from odimo_moo.cli import main
        assert main(["compare", "--from", {str(tmp_path / "in")!r}, "--out", {str(out)!r}]) == 0
        assert "torch" not in sys.modules
    ''')
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    trace = json.loads((out / "compare.json").read_text())["oneshot"]["evolutionary"]
    assert [step[0] for step in next(iter(trace.values()))["trace"]] == [1, 2]


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
        return {"lambda": 0.0}

    def run(self, bench, params, workdir):
        weight = float(params["lambda"])
        return [Outcome("swept", 0.9 - weight, 0.9, 100.0 - 10 * weight, 1.0, {}, dict(params),
                        label=f"lambda={weight:g}", wall_time_s=2.0, train_epochs=4, seed=bench.setup.seed)]


class Fixed(Strategy):
    name = "fixed"

    def run(self, bench, params, workdir):
        return [Outcome("fixed", 0.85, 0.85, 120.0, 1.0, {}, label="manual", wall_time_s=1.0, train_epochs=4,
                        seed=bench.setup.seed)]


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
    assert swept["compute"]["train_epochs"] == 12 and swept["wall_time_s"] == 6.0
    # vs manual (0.85, 120): lambda=0 (0.9, 100) is more accurate and 1.2x cheaper.
    assert swept["vs_baselines"]["manual"]["iso_accuracy_cost_ratio"] == pytest.approx(1.2)
    assert load_outcomes(out)  # a compare folder can be read back with --from


# Seeds: hand-made outcomes of three seeds, reference point (accuracy 0, latency 100).
#   A          seed 0 (0.80, 50)   seed 1 (0.90, 50)   seed 2 (0.70, 50)   HV 40, 45, 35
#   B          seed 0 (0.50, 20)   seed 1 (0.45, 20)   seed 2 (0.55, 20)   HV 40, 36, 44
#   heuristic  seed 0 (0.60, 60)   seed 1 (0.70, 60)   seed 2 (0.75, 60)   HV 24, 28, 30
def seeded(strategy: str, label: str, accuracy: float, latency: float, seed: int) -> Outcome:
    return Outcome(strategy=strategy, accuracy=accuracy, val_accuracy=accuracy, latency_cycles=latency,
                   energy_uj=1.0, channel_split={}, label=label, seed=seed, train_epochs=6, wall_time_s=10.0 + seed)


SEEDED = ([seeded("A", "a", acc, 50, seed) for seed, acc in enumerate((0.80, 0.90, 0.70))]
          + [seeded("B", "b", acc, 20, seed) for seed, acc in enumerate((0.50, 0.45, 0.55))]
          + [seeded("heuristic", "h", acc, 60, seed) for seed, acc in enumerate((0.60, 0.70, 0.75))])


def test_seeds_report_by_hand():
    report = build_report(SEEDED, "latency", ["heuristic"], ReferencePoint(0.0, 100.0))
    rows = {row["method"]: row for row in report["methods"]}
    assert report["seeds"] == ["0", "1", "2"] and rows["A"]["seeds"] == ["0", "1", "2"]
    a = rows["A"]
    assert [a["per_seed"][s]["hypervolume"] for s in "012"] == pytest.approx([40.0, 45.0, 35.0])
    # mean 40, sample std sqrt((0 + 25 + 25) / 2) = 5
    assert (a["hypervolume"], a["hypervolume_std"], a["hypervolume_min"], a["hypervolume_max"]) == \
        pytest.approx((40.0, 5.0, 35.0, 45.0))
    assert a["hypervolume_fraction"] == pytest.approx(0.4)
    heuristic = rows["heuristic"]
    # 24, 28, 30: mean 27.333, deviations -3.333, 0.667, 2.667 -> std sqrt(18.667 / 2) = 3.055
    assert heuristic["hypervolume"] == pytest.approx(82 / 3) and heuristic["hypervolume_std"] == pytest.approx(
        (28 / 3) ** 0.5)
    # A against the same seed's heuristic: 60 / 50 = 1.2x in seeds 0 and 1; seed 2's heuristic (0.75)
    # is more accurate than any A point: no ratio. Iso-cost gains 0.2, 0.2, -0.05.
    iso = a["vs_baselines"]["h"]
    assert iso["seeds"] == 3 and iso["iso_accuracy_cost_ratio"] == pytest.approx(1.2)
    assert iso["iso_accuracy_cost_ratio_missing"] == 1 and iso["iso_accuracy_cost_ratio_std"] == 0.0
    assert iso["iso_cost_accuracy_gain"] == pytest.approx(0.35 / 3)
    assert iso["iso_cost_accuracy_gain_min"] == pytest.approx(-0.05) and iso["iso_cost_accuracy_gain_max"] == \
        pytest.approx(0.2)
    assert iso["per_seed"]["2"]["iso_accuracy_cost_ratio"] is None
    assert a["compute"] == {"train_epochs": 6, "oneshot_evaluations": 0, "oneshot_images": 0, "wall_s": 11.0,
                            "cpu_s": 0.0}
    # Separation (min-max ranges): A [35, 45] and B [36, 44] overlap; both beat the heuristic [24, 30].
    # B reaches no heuristic accuracy in any seed (ratio 0 in all three): the heuristic is better there.
    # A's ratios [1.2, 1.2, 0] straddle the heuristic's 1: no claim.
    claims = {(s["measure"], s["better"], s["worse"]) for s in report["separations"]}
    assert claims == {("hypervolume", "A", "heuristic"), ("hypervolume", "B", "heuristic"),
                      ("iso_accuracy_cost_ratio[h]", "h", "B")}
    assert "min-max ranges do not overlap" in report["separation_rule"]
    assert a["median_front"] == [{"accuracy": 0.8, "latency_cycles": 50.0}]  # 2 of 3 seeds reach 0.8 at 50
    text = format_table(report)
    assert "40 +- 5 [35, 45]" in text and "A better than heuristic on hypervolume" in text


def test_one_seed_never_separates():
    one = [o for o in SEEDED if o.seed == 0]
    report = build_report(one, "latency", ["heuristic"], ReferencePoint(0.0, 100.0))
    assert report["separations"] == [] and "one seed only" in format_table(report)


def test_separation_rule_edges():
    assert not separated([2.0], [1.0])  # one seed: never
    assert not separated([2.0, 3.0], [1.0, 2.0])  # touching ranges overlap
    assert separated([2.1, 3.0], [1.0, 2.0])
    assert spread([40.0, 45.0, 35.0]) == {"mean": 40.0, "std": 5.0, "min": 35.0, "max": 45.0, "n": 3}
    assert spread([]) == {"mean": None, "std": None, "min": None, "max": None, "n": 0}


def test_median_attainment_front_by_hand():
    fronts = [[(10, 0.5), (20, 0.8)], [(15, 0.6)], [(5, 0.4), (30, 0.9)]]
    # at each cost the second best of the three fronts' accuracy reached at that cost or less
    assert median_attainment(fronts) == [(10, 0.4), (15, 0.5), (20, 0.6), (30, 0.8)]
    assert median_attainment(fronts[:2]) == [(10, 0.5), (15, 0.6), (20, 0.8)]  # 1 of 2: the union's front
    assert median_attainment([[(3, 0.2), (1, 0.5)]]) == [(1, 0.5)]  # one front: its non-dominated points


def test_results_markdown_section_is_written_and_replaced_in_place(tmp_path):
    report = build_report(SEEDED, "latency", ["heuristic"], ReferencePoint(0.0, 100.0))
    run = {"setup": {"soc": "darkside", "model": "m", "dataset": "d"}, "command": "odimo compare --preset x",
           "machine": {"cpu": "Some CPU", "cores": 2, "torch": "2", "torch_threads": 1, "device": "cpu"}}
    section = results_section(report, run, ["runs/x"])
    assert "### darkside m on d, latency" in section and "`odimo compare --preset x`" in section
    assert "Some CPU, 2 cores" in section and "50.8x lower energy" in section
    assert "| A | h | 0.6833 | 60 | 1.2x ± 0 [1.2, 1.2] (none as accurate in 1 seed(s)) |" in section
    target = tmp_path / "RESULTS.md"
    update_results_file(target, "first", "one")
    update_results_file(target, section_key(run, report), section)
    update_results_file(target, "first", "two")
    text = target.read_text()
    assert text.count("<!-- odimo-compare: first -->") == 1 and "two" in text and "\none\n" not in text
    assert text.index("two") < text.index("### darkside m on d")


def test_result_files_of_older_versions_still_load(tmp_path):
    old = {"strategy": "evolutionary", "accuracy": 0.8, "val_accuracy": 0.79, "latency_cycles": 10.0,
           "energy_uj": 1.0, "channel_split": {}, "params": {}, "artifacts": {}, "wall_time_s": 3.0, "trainings": 1,
           "label": "front 1/3"}
    outcome = Outcome.from_dict(old)
    assert (outcome.seed, outcome.train_epochs, outcome.oneshot_evaluations, outcome.cpu_time_s) == (None, 0, 0.0, 0.0)
    (tmp_path / "result.json").write_text(json.dumps(old))
    report = build_report(load_outcomes(tmp_path), "latency", [])
    assert report["seeds"] == ["-"] and report["methods"][0]["per_seed"]["-"]["points"] == 1
