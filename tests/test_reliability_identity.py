"""One identity for a run's results (issue 16, item 2): the study and its checkpoints agree on what
defines a result, and no study or re-run alters the files of another."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from odimo_moo.cli import main
from odimo_moo.study.config import load_study
from odimo_moo.workbench import Setup

from test_reliability_faults import TINY
from test_reliability_inputs import check_clean_error
from test_study_drivers import toy_config

#: A value other than the default for every Setup field that defines what is trained.
OTHER_SETUP = {"soc": "darkside", "model": "resnet20", "dataset": "mnist", "metric": "energy",
               "data_root": "/data/elsewhere", "download": True, "data_limit": 50, "image_size": 16,
               "val_fraction": 0.2, "seed": 7, "exclude": ["conv1"]}
STUDY_KEY = {"metric": "metrics"}


def _within(config) -> bool:
    """Whether the checkpoints' identity (the Setup's) is part of the study identity, as stored (JSON)."""
    setup = json.loads(json.dumps(config.setup().identity()))
    return all(config.identity()[key] == value for key, value in setup.items())


def test_every_setting_of_the_checkpoints_identity_is_in_the_study_identity(tmp_path):
    assert set(OTHER_SETUP) == set(Setup().identity())
    base = load_study(str(toy_config(tmp_path)))
    assert _within(base)
    for field, value in OTHER_SETUP.items():
        key = STUDY_KEY.get(field, field)
        value = ["energy", "latency"] if key == "metrics" else value
        changed = dataclasses.replace(base, **{key: tuple(value) if isinstance(value, list) else value})
        assert changed.identity() != base.identity(), field
        assert _within(changed), field


def _study(tmp_path: Path, **changes) -> list[str]:
    return ["run", str(toy_config(tmp_path, **changes)), "--no-progress", "--no-report"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != "study.db"}


def test_a_rerun_with_another_data_root_is_refused_naming_it(tmp_path, capsys):
    assert main(_study(tmp_path, data_root=str(tmp_path / "a"), trials=1)) == 0
    capsys.readouterr()
    before = _files(tmp_path / "out")
    err = check_clean_error(capsys, _study(tmp_path, data_root=str(tmp_path / "b"), trials=1), 2,
                            f"study 'toy' in {tmp_path / 'out'} was created for a different problem (data_root: ")
    assert str(tmp_path / "a") in err and str(tmp_path / "b") in err
    assert _files(tmp_path / "out") == before


def test_a_second_study_on_the_same_output_folder_is_refused(tmp_path, capsys):
    assert main(_study(tmp_path, trials=1)) == 0
    capsys.readouterr()
    before = _files(tmp_path / "out")
    check_clean_error(capsys, _study(tmp_path, name="other", trials=2), 2,
                      f"{tmp_path / 'out'} holds the trials of study 'toy', not 'other' (setting: name)")
    assert _files(tmp_path / "out") == before


@pytest.mark.parametrize("damage", [b"", b"not a database at all, but long enough"], ids=["empty", "garbage"])
def test_a_damaged_study_file_is_refused_not_recreated(damage, tmp_path, capsys):
    assert main(_study(tmp_path, trials=1)) == 0
    capsys.readouterr()
    database = tmp_path / "out" / "study.db"
    database.write_bytes(damage)
    problem = "is empty" if not damage else "is not a SQLite database"
    check_clean_error(capsys, _study(tmp_path, trials=1), 2,
                      f"study file {database} {problem} but {tmp_path / 'out' / 'trials'} holds trial folders")
    assert database.read_bytes() == damage


def test_a_damaged_owner_record_is_refused(tmp_path, capsys):
    assert main(_study(tmp_path, trials=1)) == 0
    capsys.readouterr()
    (tmp_path / "out" / "study-identity.json").write_text("[]")
    check_clean_error(capsys, _study(tmp_path, trials=1), 2, "study-identity.json is damaged")


def test_a_folder_of_an_earlier_version_is_adopted(tmp_path, capsys):
    """A study folder written before the owner record (and a stored identity without data_root)
    still resumes."""
    assert main(_study(tmp_path, trials=1)) == 0
    (tmp_path / "out" / "study-identity.json").unlink()
    assert main(_study(tmp_path, trials=2)) == 0
    owner = json.loads((tmp_path / "out" / "study-identity.json").read_text())
    assert owner["name"] == "toy" and owner["identity"]["data_root"] is None


def test_a_search_rerun_with_fewer_epochs_is_refused(tmp_path, capsys):
    """A finished search re-run with fewer search epochs would return the longer run's result under
    the shorter run's settings: refused, naming the phase, its epochs and the checkpoint."""
    out = tmp_path / "run"
    command = ["search", *TINY, "--set", "warmup_epochs=1", "--set", "finetune_epochs=1", "--set",
               "lr_schedule=constant", "--out", str(out)]
    assert main([*command, "--set", "search_epochs=2"]) == 0
    capsys.readouterr()
    result = (out / "result.json").read_bytes()
    check_clean_error(capsys, [*command, "--set", "search_epochs=1"], 2,
                      f"{out / 'checkpoints' / 'search.pt'} holds 2 finished epochs of phase search, this run "
                      f"asks for 1")
    assert (out / "result.json").read_bytes() == result
    assert main([*command, "--set", "search_epochs=2"]) == 0   # the same command still finishes
    assert (out / "result.json").read_bytes() == result


def test_study_yaml_of_the_owner_is_kept(tmp_path, capsys):
    assert main(_study(tmp_path, trials=1)) == 0
    written = yaml.safe_load((tmp_path / "out" / "study.yaml").read_text())
    main(_study(tmp_path, name="other", trials=1))
    assert yaml.safe_load((tmp_path / "out" / "study.yaml").read_text()) == written
