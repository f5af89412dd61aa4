"""Study configuration: schema, validation messages (all problems at once), --set overrides, and
every shipped study file."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from odimo_moo.cli import main
from odimo_moo.errors import UsageError
from odimo_moo.study.config import (Choice, Range, apply_overrides, load_study, packaged_studies, read_study_file,
                                    validate)

BASE = {
    "name": "t",
    "soc": "diana",
    "model": "resnet8",
    "dataset": "digits",
    "training": {"warmup_epochs": 1, "search_epochs": 1, "finetune_epochs": 1},
    "search_space": {"lambda": [1.0e-6, 1.0e-3]},
    "enqueue": [{"lambda": 0}],
    "trials": 3,
}


def _with(changes: dict) -> dict:
    """BASE with dotted keys set (value None deletes the key)."""
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return raw


def _problems(raw: dict) -> list[str]:
    with pytest.raises(UsageError) as info:
        validate(raw, "cfg.yaml")
    message = str(info.value)
    assert message.startswith("cfg.yaml: ")
    return message.splitlines()[1:]


def test_valid_config_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = validate(BASE)
    assert config.metrics == ("latency",)
    assert config.strategy == "odimo"
    assert config.driver == "optuna" and config.sampler.name == "tpe"
    assert config.out == tmp_path / "runs" / "t"
    assert config.storage == f"sqlite:///{tmp_path / 'runs' / 't' / 'study.db'}"
    assert config.search_space == (Range("lambda", 1e-6, 1e-3, log=True, integer=False),)
    assert config.enqueue == ({"lambda": 0.0},)
    assert config.heartbeat.interval < config.heartbeat.grace
    setup = config.setup(progress=False)
    assert (setup.soc, setup.model, setup.dataset, setup.metric) == ("diana", "resnet8", "digits", "latency")


def test_full_search_space_and_round_trip():
    raw = _with({
        "metrics": ["energy", "latency"],
        "search_space": {"lambda": {"low": "1e-7", "high": 1e-4},  # YAML 1.1 reads 1e-7 as a string
                         "lr": {"low": 1e-4, "high": 1e-2, "log": True},
                         "lambda_ramp": {"low": 0, "high": 1, "log": False},
                         "search_epochs": [1, 4],
                         "parametrization": {"choices": ["thermometric", "softmax"]},
                         "gumbel": {"choices": [True, False]}},
        "enqueue": [{"lambda": 0, "parametrization": "softmax"}, {"lambda": 1e-5, "search_epochs": 2}],
        "driver": "optuna", "sampler": {"name": "nsga2", "settings": {"population_size": 4}},
        "training.warmup_epochs": 2, "training.search_epochs": None, "image_size": 16, "threads": 1,
    })
    config = validate(raw)
    by_name = {p.name: p for p in config.search_space}
    assert by_name["lambda"] == Range("lambda", 1e-7, 1e-4, True, False)
    assert by_name["lambda_ramp"] == Range("lambda_ramp", 0.0, 1.0, False, False)
    assert by_name["search_epochs"] == Range("search_epochs", 1, 4, False, True)
    assert by_name["parametrization"] == Choice("parametrization", ("thermometric", "softmax"))
    assert (config.setup().metric, config.setup().image_size, config.threads) == ("energy", 16, 1)
    again = validate(yaml.safe_load(yaml.safe_dump(config.to_dict(), sort_keys=False)))
    assert again == config


BAD_CONFIGS = [
    ({"colour": "red"}, "colour: unknown key"),
    ({"soc": None}, "soc: is required"),
    ({"search_space": None}, "search_space: is required"),
    ({"soc": "tpu9000"}, "soc: unknown SoC 'tpu9000'; registered: "),
    ({"model": "resnet1000"}, "model: unknown model 'resnet1000'"),
    ({"dataset": "svhn"}, "dataset: unknown dataset 'svhn'"),
    ({"strategy": "magic"}, "strategy: unknown strategy 'magic'"),
    ({"metrics": ["latency", "area"]}, "metrics[1]: unknown metric 'area'"),
    ({"metrics": ["latency", "latency"]}, "metrics: must list latency and/or energy once each"),
    ({"metrics": 3}, "metrics: must be a list of strings"),
    ({"trials": 0}, "trials: must be >= 1"),
    ({"trials": "many"}, "trials: must be an integer, got 'many'"),
    ({"trials": 2.5}, "trials: must be an integer"),
    ({"trials": True}, "trials: must be an integer"),
    ({"seed": "x"}, "seed: must be an integer"),
    ({"device": "tpu"}, "device: must be one of auto, cpu, cuda"),
    ({"threads": 0}, "threads: must be >= 1"),
    ({"driver": "hyperopt"}, "driver: must be one of optuna, pymoo"),
    ({"data_limit": 0}, "data_limit: must be >= 1"),
    ({"image_size": 0}, "image_size: must be >= 1 pixel"),
    ({"dataset": "cifar10", "image_size": 16}, "image_size: dataset cifar10 has a fixed input size"),
    ({"val_fraction": 1.5}, "val_fraction: must be in (0, 1)"),
    ({"download": "yes"}, "download: must be true or false"),
    ({"storage": "study.db"}, "storage: must be a SQLAlchemy URL"),
    ({"name": "a/b"}, "name: must be a non-empty name without '/'"),
    ({"search_epochs": 3}, "search_epochs: training parameters go under training:"),
    ({"training.warmup_epochs": -1}, "training.warmup_epochs: warmup_epochs must be >= 0"),
    ({"training.finetune_epochs": "two"}, "training.finetune_epochs: must be an integer"),
    ({"training.lr": 0}, "training.lr: lr must be > 0, got 0"),
    ({"training.optimizer": "lion"}, "training.optimizer: optimizer must be one of adam, sgd"),
    ({"training.epochz": 1}, "training.epochz: unknown training parameter"),
    ({"training": [1, 2]}, "training: must be a mapping"),
    ({"search_space": {}}, "search_space: must name at least one parameter"),
    ({"search_space": [1, 2]}, "search_space: must be a mapping"),
    ({"search_space.lambda": {"low": 0, "high": 1e-3}},
     "search_space.lambda.low: must be > 0 for a log range"),
    ({"search_space.lambda": [-1e-3, 1e-3]}, "search_space.lambda.low: must be > 0 for a log range"),
    ({"search_space.lambda": [1e-3, 1e-6]}, "search_space.lambda: low (0.001) must be < high (1e-06)"),
    ({"search_space.lambda": [1e-3, 1e-3]}, "search_space.lambda: low (0.001) must be < high (0.001)"),
    ({"search_space.lambda": [1e-6]}, "search_space.lambda: a range is [low, high]"),
    ({"search_space.lambda": {"low": 1e-6}}, "search_space.lambda: a range needs both low and high"),
    ({"search_space.lambda": {"low": 1e-6, "high": 1e-3, "step": 2}}, "search_space.lambda.step: unknown key"),
    ({"search_space.lambda": {"low": "tiny", "high": 1e-3}}, "search_space.lambda.low: must be a number"),
    ({"search_space.lambda": 1e-4}, "search_space.lambda: must be a range [low, high]"),
    ({"search_space.lambda": {"low": 1e-6, "high": 1e-3, "log": "yes"}},
     "search_space.lambda.log: must be true or false"),
    ({"search_space.lambda_ramp": {"low": 0, "high": 2, "log": False}},
     "search_space.lambda_ramp.high: lambda_ramp must be in [0, 1]"),
    ({"search_space.batch_size": [-2, 3]}, "search_space.batch_size.low: batch_size must be >= 1"),
    ({"search_space.batch_size": [1.5, 3]}, "search_space.batch_size.low: must be an integer"),
    ({"search_space.parametrization": ["thermometric", "softmax"]},
     "search_space.parametrization: parametrization takes a string: give {choices: [...]}"),
    ({"search_space.parametrization": {"choices": ["thermometric", "spline"]}},
     "search_space.parametrization.choices[1]: parametrization must be one of"),
    ({"search_space.parametrization": {"choices": []}}, "search_space.parametrization.choices: must be a non-empty"),
    ({"search_space.optimizer": {"choices": ["adam", "adam"]}},
     "search_space.optimizer.choices[1]: 'adam' is listed twice"),
    ({"search_space.warp": [1, 2]}, "search_space.warp: unknown parameter"),
    ({"search_space.warmup_epochs": [1, 2]}, "search_space.warmup_epochs: is also fixed under training"),
    ({"search_space.cost_weight": [1e-6, 1e-3]}, "search_space.cost_weight: unknown parameter; known: "),
    ({"enqueue": {"lambda": 0}}, "enqueue: must be a list of points"),
    ({"enqueue": [{"lambda": 1.0}]}, "enqueue[0].lambda: 1.0 is outside the search space"),
    ({"enqueue": [{"lambda": -1e-4}]}, "enqueue[0].lambda: -0.0001 is outside the search space"),
    ({"enqueue": [{"lr": 1e-3}]}, "enqueue[0].lr: not in the search space"),
    ({"enqueue": [{}]}, "enqueue[0]: must be a non-empty mapping"),
    ({"enqueue": [{"lambda": 0}, {"lambda": 1e-5}, {"lambda": 1e-4}, {"lambda": 1e-6}]},
     "enqueue: 4 points but only 3 trials"),
    ({"sampler": "cmaes"}, "sampler.name: driver optuna offers tpe, nsga2, random, gp, got 'cmaes'"),
    ({"sampler": {"name": "tpe", "settings": {"n_startup_trials": 0}}},
     "sampler.settings.n_startup_trials: must be >= 1"),
    ({"sampler": {"name": "tpe", "settings": {"gamma": 0.1}}}, "sampler.settings.gamma: unknown setting of tpe"),
    ({"sampler": {"name": "tpe", "setting": {}}}, "sampler.setting: unknown key"),
    ({"sampler": {"name": "nsga2", "settings": {"crossover_prob": 2}}},
     "sampler.settings.crossover_prob: must be in [0, 1]"),
    ({"driver": "pymoo", "sampler": "tpe"}, "sampler.name: driver pymoo offers nsga2, got 'tpe'"),
    ({"driver": "pymoo", "sampler": {"settings": {"pop_size": "big"}}},
     "sampler.settings.pop_size: must be an integer"),
    ({"heartbeat": {"interval": 5, "grace": 5}}, "heartbeat.grace: must be > heartbeat.interval"),
    ({"heartbeat": {"interval": 0}}, "heartbeat.interval: must be >= 1 second"),
    ({"heartbeat": {"max_retry": -1}}, "heartbeat.max_retry: must be >= 0"),
    ({"heartbeat": {"beat": 1}}, "heartbeat.beat: unknown key"),
    ({"plugins": ["no_such_module_xyz"]}, "plugins: plugin 'no_such_module_xyz' not found"),
    ({"exclude": [1]}, "exclude[0]: must be a string"),
]


@pytest.mark.parametrize("changes, expected", BAD_CONFIGS, ids=[e.split(":")[0] for _, e in BAD_CONFIGS])
def test_bad_config_names_key_path(changes, expected):
    lines = _problems(_with(changes))
    assert any(line.strip().startswith(expected) for line in lines), lines


def test_all_problems_reported_together():
    raw = _with({"soc": "tpu9000", "trials": 0, "search_space.lambda": [0, 1e-3], "training.lr": -1,
                 "colour": "red", "sampler": "cmaes"})
    lines = _problems(raw)
    assert len(lines) == 6, lines
    for key in ("soc:", "trials:", "search_space.lambda.low:", "training.lr:", "colour:", "sampler.name:"):
        assert any(line.strip().startswith(key) for line in lines), (key, lines)


def test_apply_overrides_nested_and_errors():
    raw, problems = apply_overrides(BASE, {"trials": 5, "training.search_epochs": 4, "sampler.name": "random",
                                           "search_space.lambda": [1e-7, 1e-4]})
    assert not problems
    assert raw["trials"] == 5 and raw["training"]["search_epochs"] == 4 and raw["sampler"] == {"name": "random"}
    assert BASE["trials"] == 3  # the input is not modified
    _, problems = apply_overrides(BASE, {"trials.x": 1, "a..b": 2})
    assert problems == ["--set trials.x: trials is not a mapping (it is 3)", "--set a..b: empty key in the dotted path"]


def test_set_overrides_are_validated(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    config = load_study(str(path), {"trials": 4, "training.search_epochs": 2, "out": str(tmp_path / "o")})
    assert config.trials == 4 and config.training["search_epochs"] == 2 and config.out == tmp_path / "o"
    with pytest.raises(UsageError) as info:
        load_study(str(path), {"trials": -1, "search_space.lambda.high": 0, "soc.x": 1})
    text = str(info.value)
    assert "trials: must be >= 1" in text
    assert "--set soc.x: soc is not a mapping" in text


def test_name_defaults_to_file_stem(tmp_path):
    raw = dict(BASE)
    raw.pop("name")
    path = tmp_path / "my-study.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_study(str(path)).name == "my-study"


@pytest.mark.parametrize("text, expected", [
    ("- a\n- b\n", "a study file must be a mapping"),
    ("soc: [unclosed\n", "is not valid YAML"),
])
def test_unreadable_files(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=expected):
        read_study_file(str(path))


def test_unknown_study_file_lists_packaged():
    with pytest.raises(UsageError, match="packaged studies: .*quickstart"):
        read_study_file("no/such/file.yaml")


@pytest.mark.parametrize("name", packaged_studies())
def test_every_shipped_study_is_valid(name):
    config = load_study(name)
    assert config.name == name
    assert any(p.name == "lambda" and p.log for p in config.search_space)
    assert {"lambda": 0.0} in config.enqueue
    assert config.trials >= len(config.enqueue)


def test_shipped_studies_match_the_repository_folder():
    folder = Path(__file__).resolve().parents[1] / "studies"
    assert sorted(p.stem for p in folder.glob("*.yaml")) == packaged_studies()
    assert {"quickstart", "diana_resnet20_cifar10", "darkside_mobilenetv1_cifar10", "diana_resnet18_cifar100",
            "diana_resnet18_imagenet"} <= set(packaged_studies())


def test_paper_studies_follow_the_paper_protocol():
    for name in ("diana_resnet20_cifar10", "diana_resnet18_cifar100", "diana_resnet18_imagenet"):
        training = load_study(name).training
        assert training["search_epochs"] == 200 and training["finetune_epochs"] == 200
        assert training["optimizer"] == "sgd" and training["lr"] == 1e-3 and training["nas_lr"] == 1e-3
        assert training["temperature_decay"] == 0.045
    assert load_study("darkside_mobilenetv1_cifar10").model == "mobilenetv1_darkside"


def test_cli_reports_bad_config_in_one_block_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_with({"trials": "many", "soc": "tpu9000"})))
    assert main(["run", str(path), "--set", "search_space.lambda={low: 0, high: 1.0e-3}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith(f"odimo run: error: {path}: 3 problems:")
    assert "  search_space.lambda.low: must be > 0 for a log range" in err


def test_cli_rejects_malformed_set(capsys):
    assert main(["run", "--set", "trials"]) == 2
    assert "--set 'trials': expected KEY=VALUE" in capsys.readouterr().err
