"""Trial files in an Optuna artifact store, where optuna-dashboard shows them.

Each finished trial uploads the files its strategy names in its outcome (mapping.json, metrics.csv,
exported.pt, exported.onnx, ...), its work folder's export_check.json and a plot of its mapping
(mapping.png) to a :class:`optuna.artifacts.FileSystemArtifactStore` (``artifacts:`` of the study;
``<out>/artifacts`` by default). Reports read them back where a trial's work folder is absent (a
study reported from another machine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta, upload_artifact
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

EXTRA_FILES = ("export_check.json",)
MAPPING_PLOT = "mapping.png"


def open_store(folder: Path) -> FileSystemArtifactStore:
    """The file-system artifact store in ``folder`` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def trial_files(attrs: Mapping[str, Any], workdir: Path) -> list[Path]:
    """The files of a finished trial worth keeping: those its outcome names, then the extra ones of
    its work folder, each once and only if it exists."""
    named = [Path(path) for path in attrs.get("artifacts", {}).values()]
    files: list[Path] = []
    for path in named + [workdir / name for name in EXTRA_FILES + (MAPPING_PLOT,)]:
        if path.is_file() and path.name not in {f.name for f in files}:
            files.append(path)
    return files


def upload_trial_files(store: FileSystemArtifactStore, trial: optuna.Trial, files: list[Path],
                       warn: Callable[[str], None]) -> list[str]:
    """Upload ``files`` as artifacts of ``trial``; returns the names uploaded. A file the store
    refuses (disk full, permissions) is reported with ``warn`` and skipped: the trial's result
    stands without its copy in the store."""
    uploaded = []
    for path in files:
        try:
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
        except OSError as exc:
            warn(f"trial {trial.number}: could not upload {path.name} to the artifact store "
                 f"({exc.strerror or exc}); it stays in {path.parent}")
            continue
        uploaded.append(path.name)
    return uploaded


def download_trial_files(store: FileSystemArtifactStore, trial: FrozenTrial, storage: BaseStorage,
                         folder: Path) -> dict[str, Path]:
    """Every artifact of ``trial`` (a trial of ``storage``) as a file of ``folder`` under its own name
    (kept if already there); returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for meta in get_all_artifact_meta(trial, storage=storage):
        target = folder / meta.filename
        if not target.is_file():
            download_artifact(artifact_store=store, file_path=str(target), artifact_id=meta.artifact_id)
        files[meta.filename] = target
    return files
