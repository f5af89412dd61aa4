"""Which study an output folder belongs to, checked before a study touches its trial folders.

``<out>/study-identity.json`` records the study's name and identity (:meth:`StudyConfig.identity`,
everything that defines its results). A second study with another name, or the same study re-run
with other settings, is refused (exit 2) naming the setting and the folder: its trials would resume
from, and overwrite, the first study's checkpoints. A SQLite study file that is empty or not a
database while trial folders exist is refused too: recreating it would reuse those folders for new
trials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_json
from ..errors import UsageError
from ..result_files import read_json_file
from .schema import StudyConfig
from .storage_url import sqlite_path

OWNER_FILE = "study-identity.json"
SQLITE_HEADER = b"SQLite format 3\x00"


#: Identity keys added after studies were first stored: a stored identity without them is not
#: compared on them (a study created by an earlier version stays joinable).
LEGACY_KEYS = ("data_root", "download", "metric")


def differences(stored: dict[str, Any], current: dict[str, Any]) -> str:
    """``key: study has X, config has Y`` for every key on which a stored and the current identity differ."""
    keys = sorted(key for key in set(stored) | set(current)
                  if stored.get(key) != current.get(key) and (key in stored or key not in LEGACY_KEYS))
    return "; ".join(f"{key}: study has {stored.get(key)!r}, config has {current.get(key)!r}" for key in keys)


def claim_output_folder(config: StudyConfig) -> None:
    """Refuse ``config.out`` if it holds another study, or this study with other settings; else record
    this study as its owner. Folders written before this record existed are adopted as they are."""
    path = config.out / OWNER_FILE
    if path.is_file():
        owner = read_json_file(path)
        if not isinstance(owner, dict) or not isinstance(owner.get("identity"), dict):
            raise UsageError(f"{path} is damaged; restore it, or delete it if {config.out} holds only "
                             f"study {config.name!r}")
        if owner.get("name") != config.name:
            raise UsageError(f"{config.out} holds the trials of study {owner.get('name')!r}, not {config.name!r} "
                             f"(setting: name); two studies must not share trial folders: choose another "
                             f"--out, or run study {owner.get('name')!r}")
        detail = differences(owner["identity"], config.identity())
        if detail:
            raise UsageError(f"study {config.name!r} in {config.out} was created for a different problem "
                             f"({detail}); choose another --out, or restore those settings")
    check_study_file(config)
    atomic_write_json(path, {"name": config.name, "identity": config.identity()})


def check_study_file(config: StudyConfig) -> None:
    """Refuse a SQLite study file that is empty or not a SQLite database while ``<out>/trials`` holds
    trial folders (a truncated file, a copy cut short)."""
    local = sqlite_path(config.storage)
    trials = config.out / "trials"
    if local is None or not trials.is_dir() or not any(trials.iterdir()):
        return
    database = Path(local).expanduser()
    try:
        with open(database, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        header = None
    except OSError as exc:
        raise UsageError(f"cannot read study file {database} ({exc.strerror or exc})") from exc
    if header == SQLITE_HEADER:
        return
    problem = "is missing" if header is None else "is empty" if not header else "is not a SQLite database"
    raise UsageError(f"study file {database} {problem} but {trials} holds trial folders; it is not recreated "
                     f"over them: restore it from a backup, or delete {config.out} to start the study over")
