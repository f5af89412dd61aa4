"""``odimo compare`` running methods: every Setup option reaches the Setup (search and compare alike),
presets and --set overrides, seeds in sub-folders, resume without re-running finished units, and
equal training epochs for every method after one shared warmup (tiny real run)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from odimo_moo.cli import main
from odimo_moo.commands import common
from odimo_moo.commands.compare_plan import packaged_presets, resolve_plan
from odimo_moo.commands.compare_units import matched_budget
from odimo_moo.errors import UsageError
from odimo_moo.oneshot import SearchBudget
from odimo_moo.recipe import Recipe
from odimo_moo.strategy import Outcome
from odimo_moo.workbench import Setup

PROBE = '''
import dataclasses, json, os
from odimo_moo.hookspecs import hookimpl
from odimo_moo.strategy import Outcome, Strategy


def log(bench, name, params):
    with open(os.environ["ODIMO_TEST_RUNS"], "a") as handle:
        handle.write(f"{bench.setup.seed} {name} {params.get('lambda', '-')}\\n")


class Probe(Strategy):
    """Records the Setup it was given; accuracy from the seed, lambda and offset."""

    name = "probe"

    def defaults(self):
        return {"lambda": 0.0, "offset": 0.0}

    def run(self, bench, params, workdir):
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "setup.json").write_text(json.dumps(dataclasses.asdict(bench.setup)))
        log(bench, self.name, params)
        if os.environ.get("ODIMO_TEST_FAIL") == str(bench.setup.seed):
            raise RuntimeError("killed")
        weight, seed, offset = float(params.get("lambda", 0.0)), bench.setup.seed, float(params.get("offset", 0.0))
        return [Outcome("probe", 0.5 + 0.1 * seed + offset - 0.1 * weight, 0.5,
                        100.0 - 10 * weight, 1.0, {}, dict(params), label=f"lambda={weight:g}", seed=seed,
                        train_epochs=3, wall_time_s=1.0)]


class FixedProbe(Strategy):
    name = "fixedprobe"

    def run(self, bench, params, workdir):
        log(bench, self.name, params)
        return [Outcome("fixedprobe", 0.55, 0.55, 95.0, 1.0, {}, label="manual", seed=bench.setup.seed,
                        train_epochs=3)]


@hookimpl
def odimo_register_strategies():
    return [Probe(), FixedProbe()]
'''


@pytest.fixture()
def probe(tmp_path: Path, monkeypatch) -> Path:
    plugin = tmp_path / "probe_strategies.py"
    plugin.write_text(textwrap.dedent(PROBE))
    monkeypatch.setenv("ODIMO_TEST_RUNS", str(tmp_path / "runs.log"))
    monkeypatch.delenv("ODIMO_TEST_FAIL", raising=False)
    return plugin


def runs(tmp_path: Path) -> list[str]:
    path = tmp_path / "runs.log"
    return path.read_text().splitlines() if path.exists() else []


# A non-default value per Setup field: the options that set it and what the Setup must hold.
# ``plugins`` is set by the global --plugin that loads the probe strategy itself.
SAMPLES = {
    "soc": (["--soc", "darkside"], "darkside"),
    "model": (["--model", "resnet20"], "resnet20"),
    "dataset": (["--dataset", "mnist"], "mnist"),
    "metric": (["--metric", "energy"], "energy"),
    "data_root": (["--data-root", "/data/somewhere"], "/data/somewhere"),
    "download": (["--download"], True),
    "data_limit": (["--data-limit", "77"], 77),
    "image_size": (["--image-size", "12"], 12),
    "val_fraction": (["--val-fraction", "0.25"], 0.25),
    "seed": (["--seed", "5"], 5),
    "device": (["--device", "cpu"], "cpu"),
    "plugins": ([], None),
    "exclude": (["--exclude", "stem", "--exclude", "fc"], ["stem", "fc"]),
    "progress": (["--no-progress"], False),
}


@pytest.mark.parametrize("command", ["search", "compare"])
@pytest.mark.parametrize("name", common.setup_fields())
def test_every_setup_option_reaches_the_setup(tmp_path, probe, command, name):
    if name not in SAMPLES:
        pytest.fail(f"Setup field {name!r} is new: add its option's sample value to SAMPLES")
    options, expected = SAMPLES[name]
    out = tmp_path / "out"
    argv = (["search", "--strategy", "probe", "--out", str(out)] if command == "search" else
            ["compare", "--methods", "probe", "--baselines", "probe", "--lambdas", "0", "--out", str(out)])
    assert main(["--plugin", str(probe), *argv, *options]) == 0
    found = next(out.rglob("setup.json"))
    setup = json.loads(found.read_text())
    defaults = {f.name: f.default for f in dataclasses.fields(Setup)}
    expected = [str(probe)] if name == "plugins" else expected
    assert setup[name] == expected
    others = {k: v for k, v in setup.items() if k not in (name, "plugins")}
    assert others == {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()
                      if k not in (name, "plugins")}
    if command == "compare":
        assert found.parent.parent.parent.name == f"seed-{setup['seed']}"


def test_a_setup_field_without_an_option_breaks_every_parser(monkeypatch):
    fields = common.setup_fields()
    monkeypatch.setattr(common, "setup_fields", lambda: [*fields, "new_field"])
    with pytest.raises(RuntimeError, match="new_field have no command-line option"):
        common.add_setup_options(argparse.ArgumentParser())


def write_preset(folder: Path, name: str = "preset.yaml", **extra) -> Path:
    preset = folder / name
    preset.write_text(json.dumps({"soc": "diana", "model": "resnet8", "dataset": "digits", "data_limit": 200,
                                  "seeds": [0], "lambdas": [0], "methods": ["probe"], "baselines": ["probe"],
                                  "params": {"offset": 0.2}, **extra}))
    return preset


def test_preset_options_and_set_override_in_that_order(tmp_path, probe, capsys):
    preset = write_preset(tmp_path)
    for extra, limit in (([], 200), (["--data-limit", "50"], 50), (["--data-limit", "50", "--set", "data_limit=null"],
                                                                    None)):
        out = tmp_path / f"out-{limit}"
        assert main(["--plugin", str(probe), "compare", "--preset", str(preset), "--out", str(out), *extra]) == 0
        assert json.loads(next(out.rglob("setup.json")).read_text())["data_limit"] == limit
        result = json.loads((out / "results.json").read_text())[0]
        assert result["accuracy"] == pytest.approx(0.7) and result["params"]["offset"] == 0.2
    capsys.readouterr()
    bad = write_preset(tmp_path, "bad.yaml", epochs=3)
    assert main(["--plugin", str(probe), "compare", "--preset", str(bad)]) == 2
    assert "unknown key(s) epochs" in capsys.readouterr().err
    assert main(["--plugin", str(probe), "compare", "--preset", str(preset), "--seed", "1", "--seeds", "0,1"]) == 2
    assert "give either --seed or --seeds" in capsys.readouterr().err
    assert main(["--plugin", str(probe), "compare", "--preset", str(preset), "--set", "lambda=1"]) == 2
    assert "give lambdas with --lambdas" in capsys.readouterr().err


def test_preset_params_of_methods_left_out_are_skipped_but_not_a_users_set(tmp_path, probe, capsys):
    """A preset written for every method runs with fewer (--methods); a --set no compared method takes,
    and a preset key no registered method has, stay usage errors."""
    preset = write_preset(tmp_path, params={"offset": 0.2, "evaluations": 100, "evolutionary.population": 8})
    out = tmp_path / "out"
    assert main(["--plugin", str(probe), "compare", "--preset", str(preset), "--out", str(out)]) == 0
    assert "evaluations, evolutionary.population skipped" in capsys.readouterr().err
    assert json.loads((out / "compare-run.json").read_text())["routed"] == {"probe": {"offset": 0.2}}
    assert json.loads((out / "results.json").read_text())[0]["params"]["offset"] == 0.2
    argv = ["--plugin", str(probe), "compare", "--preset", str(preset), "--out", str(tmp_path / "again")]
    assert main([*argv, "--set", "evaluations=3"]) == 2
    assert "--set evaluations: no compared method has this parameter" in capsys.readouterr().err
    for key in ("no_such_param", "nsga9.population", "evolutionary.offset"):
        bad = write_preset(tmp_path, f"bad-{key}.yaml", params={key: 1})
        assert main(["--plugin", str(probe), "compare", "--preset", str(bad), "--out", str(tmp_path / key)]) == 2
        assert f"--preset {bad}: params.{key}: no registered method has this parameter" in capsys.readouterr().err


@pytest.mark.parametrize("name", packaged_presets())
def test_packaged_presets_resolve(name):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    from odimo_moo.commands import compare

    compare.add_parser(sub)
    args = parser.parse_args(["compare", "--preset", name])
    args.plugin = []
    plan = resolve_plan(args)
    setup = common.build_setup(args, plan.setup_base, plan.setup_overrides)
    assert setup.dataset in ("fashion_mnist", "imagefolder") and setup.data_limit is not None
    assert plan.seeds == [0, 1, 2] and plan.methods and plan.title
    assert {"warmup_epochs", "search_epochs", "finetune_epochs"} <= set(plan.params)
    full = parser.parse_args(["compare", "--preset", name, "--set", "device=cuda", "--set", "data_limit=null"])
    full.plugin = []
    plan = resolve_plan(full)
    assert common.build_setup(full, plan.setup_base, plan.setup_overrides).data_limit is None


def compare(probe: Path, out: Path, *extra: str) -> int:
    return main(["--plugin", str(probe), "compare", "--methods", "probe,fixedprobe", "--baselines", "fixedprobe",
                 "--seeds", "0,1", "--lambdas", "0,1", "--out", str(out), *extra])


def test_seeds_run_in_their_own_folders_and_a_rerun_skips_finished_units(tmp_path, probe, capsys):
    out = tmp_path / "out"
    assert compare(probe, out) == 0
    assert sorted(runs(tmp_path)) == ["0 fixedprobe -", "0 probe 0.0", "0 probe 1.0",
                                      "1 fixedprobe -", "1 probe 0.0", "1 probe 1.0"]
    for seed in (0, 1):
        assert (out / f"seed-{seed}" / "probe" / "lambda-1" / "outcomes.json").is_file()
        assert (out / f"seed-{seed}" / "fixedprobe" / "outcomes.json").is_file()
    first = json.loads((out / "compare.json").read_text())
    assert first["seeds"] == ["0", "1"]
    assert main(["compare", "--from", str(out), "--out", str(tmp_path / "again")]) == 0  # read back
    assert compare(probe, out) == 0
    assert len(runs(tmp_path)) == 6  # nothing ran again
    assert json.loads((out / "compare.json").read_text())["methods"] == first["methods"]
    capsys.readouterr()
    assert compare(probe, out, "--set", "probe.offset=0.1") == 2  # other settings: refused, not reused
    err = capsys.readouterr().err
    assert "holds finished results of other settings (params differ)" in err and len(err.splitlines()) == 1


def test_a_compare_killed_in_a_unit_resumes_after_the_finished_ones(tmp_path, probe, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.setenv("ODIMO_TEST_FAIL", "1")
    assert compare(probe, out) == 1
    assert runs(tmp_path) == ["0 probe 0.0", "0 probe 1.0", "0 fixedprobe -", "1 probe 0.0"]
    monkeypatch.delenv("ODIMO_TEST_FAIL")
    assert compare(probe, out) == 0
    assert runs(tmp_path)[4:] == ["1 probe 0.0", "1 probe 1.0", "1 fixedprobe -"]
    results = [Outcome.from_dict(o) for o in json.loads((out / "results.json").read_text())]
    assert sorted((o.seed, o.strategy, o.label) for o in results) == sorted(
        (seed, strategy, label) for seed in (0, 1) for strategy, label in
        (("probe", "lambda=0"), ("probe", "lambda=1"), ("fixedprobe", "manual")))


def test_matched_budget_by_hand():
    odimo = [Outcome("odimo", 0.9, 0.9, 10.0, 1.0, {}, wall_time_s=30.0, phase_wall_s={"search": 24.0,
                                                                                        "finetune": 6.0}),
             Outcome("odimo", 0.8, 0.8, 8.0, 1.0, {}, wall_time_s=34.0, phase_wall_s={"search": 28.0,
                                                                                      "finetune": 6.0})]
    recipe = Recipe(search_epochs=4, finetune_epochs=2)
    budget = matched_budget(odimo, recipe, recipe)
    # 2 lambdas x 6 epochs = 12 epochs = 2 points of 6; a fixed-mapping epoch ~ ODiMO's fine-tune
    # epoch (12 s / 4 epochs = 3 s), so training them takes ~36 s of ODiMO's 64 s: 28 s of one-shot search.
    assert budget["points"] == 2 and budget["odimo_train_epochs"] == 12
    assert budget["fixed_epoch_seconds"] == pytest.approx(3.0) and budget["clock"] == "wall"
    assert budget["params"] == {"evaluations": 0, "max_seconds": pytest.approx(28.0), "clock": "wall",
                                "finetune_top": 2}
    longer = matched_budget(odimo, recipe, Recipe(search_epochs=1, finetune_epochs=1))  # 2 epochs per point
    assert longer["points"] == 6 and longer["params"]["max_seconds"] == pytest.approx(64 - 6 * 2 * 3.0)


def test_matched_budget_on_the_cpu_clock_ignores_what_other_processes_did_to_the_wall_time():
    """The same two ODiMO points, the second run while another process took half the CPU: its wall
    time doubled, its CPU time did not. On the CPU clock the budget is what ODiMO computed."""
    odimo = [Outcome("odimo", 0.9, 0.9, 10.0, 1.0, {}, wall_time_s=30.0, cpu_time_s=30.0,
                     phase_wall_s={"search": 24.0, "finetune": 6.0}, phase_cpu_s={"search": 24.0, "finetune": 6.0}),
             Outcome("odimo", 0.8, 0.8, 8.0, 1.0, {}, wall_time_s=68.0, cpu_time_s=34.0,
                     phase_wall_s={"search": 56.0, "finetune": 12.0}, phase_cpu_s={"search": 28.0, "finetune": 6.0})]
    recipe = Recipe(search_epochs=4, finetune_epochs=2)
    cpu = matched_budget(odimo, recipe, recipe, "cpu")
    assert cpu["odimo_seconds"] == pytest.approx(64.0) and cpu["fixed_epoch_seconds"] == pytest.approx(3.0)
    assert cpu["params"]["max_seconds"] == pytest.approx(64.0 - 2 * 6 * 3.0) and cpu["params"]["clock"] == "cpu"
    wall = matched_budget(odimo, recipe, recipe, "wall")
    assert wall["params"]["max_seconds"] == pytest.approx(98.0 - 2 * 6 * 4.5)


def test_a_one_shot_budget_takes_a_clock():
    values = {"evaluations": 0, "max_seconds": 2.0, "finetune_top": 1, "clock": "cpu"}
    assert SearchBudget.pop_from(dict(values)).clock == "cpu"
    with pytest.raises(UsageError, match="clock must be one of wall, cpu"):
        SearchBudget.pop_from({**values, "clock": "sundial"})


def test_every_method_trains_the_same_epochs_after_one_shared_warmup(tmp_path, capsys):
    """Real strategies, tiny: ODiMO (search 2 + fine-tune 1), evolutionary at ODiMO's budget and a
    heuristic each train 3 epochs after the warmup, which is computed once and reported apart."""
    out = tmp_path / "out"
    assert main(["compare", "--data-limit", "60", "--device", "cpu", "--no-progress", "--lambdas", "0.5",
                 "--methods", "odimo,evolutionary,heuristic", "--budget", "matched",
                 "--set", "warmup_epochs=1", "--set", "search_epochs=2", "--set", "finetune_epochs=1",
                 "--set", "batch_size=32", "--set", "heuristic.mapping=all:digital", "--set", "population=4",
                 "--set", "recalibration_batches=1", "--out", str(out), "--results-md", str(tmp_path / "R.md")]) == 0
    outcomes = [Outcome.from_dict(o) for o in json.loads((out / "results.json").read_text())]
    assert sorted(o.strategy for o in outcomes) == ["evolutionary", "heuristic", "odimo"]
    for outcome in outcomes:
        assert outcome.train_epochs == 3 and outcome.selected_epoch == 1 and outcome.seed == 0
        phases = [row["phase"] for row in json.loads(Path(outcome.artifacts["metrics_json"]).read_text())]
        first = "search" if outcome.strategy == "odimo" else "train"
        assert phases == ["warmup", first, first, "finetune"], outcome.strategy
        assert outcome.wall_time_s == pytest.approx(sum(outcome.phase_wall_s.values()))
    evolutionary = next(o for o in outcomes if o.strategy == "evolutionary")
    assert evolutionary.oneshot_evaluations >= 1 and evolutionary.params["finetune_top"] == 1
    assert evolutionary.params["evaluations"] == 0 and evolutionary.params["max_seconds"] > 0
    assert evolutionary.params["clock"] == "cpu"  # on a CPU device: steady under other processes' load
    assert evolutionary.phase_cpu_s["oneshot"] > 0 and evolutionary.cpu_time_s == pytest.approx(
        sum(evolutionary.phase_cpu_s.values()))
    assert len(list((out / "warmup-cache").glob("warmup-*/warmup.pt"))) == 1  # one warmup, every method hit it
    assert not list(out.glob("seed-*/**/checkpoints/*.pt"))  # finished points keep their exports only
    assert all(Path(o.artifacts["exported_model"]).is_file() for o in outcomes)
    warmup = json.loads((out / "seed-0" / "warmup.json").read_text())["warmups"]
    assert len(warmup) == 1 and warmup[0]["epochs"] == 1 and warmup[0]["methods"] == [
        "odimo", "evolutionary", "heuristic"]
    report = json.loads((out / "compare.json").read_text())
    assert {row["method"]: row["compute"]["train_epochs"] for row in report["methods"]} == {
        "odimo": 3, "evolutionary": 3, "heuristic": 3}
    assert report["warmup"]["per_seed"]["0"]["epochs"] == 1
    assert report["budget"]["mode"] == "matched" and "evolutionary" in report["budget"]["per_seed"]["0"]
    assert report["oneshot"]["evolutionary"]["0"]["trace"]
    markdown = (tmp_path / "R.md").read_text()
    assert "seed 0: evolutionary trains 1 points x 3 epochs (ODiMO: 3 epochs)" in markdown
    assert "### diana resnet8 on digits, latency" in markdown and "| odimo | 1 |" in markdown


def test_reading_a_compare_folder_back_keeps_its_metric(tmp_path, probe):
    out = tmp_path / "out"
    assert main(["--plugin", str(probe), "compare", "--methods", "probe", "--baselines", "probe", "--lambdas", "0",
                 "--metric", "energy", "--out", str(out)]) == 0
    assert json.loads((out / "compare-run.json").read_text())["setup"]["metric"] == "energy"
    assert main(["compare", "--from", str(out), "--out", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "compare.json").read_text())["metric"] == "energy"
    assert main(["compare", "--from", str(out), "--metric", "latency", "--out", str(tmp_path / "latency")]) == 0
    assert json.loads((tmp_path / "latency" / "compare.json").read_text())["metric"] == "latency"
