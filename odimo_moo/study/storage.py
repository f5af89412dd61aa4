"""Opening a study's Optuna storage (any SQLAlchemy URL with heartbeat and retry of dead workers, or
a journal file with its file lock) and creating or joining the study itself."""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from ..errors import RunFailure, UsageError
from .schema import Heartbeat, StudyConfig
from .ownership import differences
from .storage_url import journal_path, local_file, sqlite_path
from .workers import RetryWithoutWorker, fail_trials_of_dead_workers

CONFIG_ATTR = "config"
IDENTITY_ATTR = "identity"
OUT_ATTR = "out_dir"
IDENTITY_WAIT_STEPS, IDENTITY_WAIT_S = 20, 0.25

SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]


def quiet_optuna() -> None:
    """Optuna's per-trial log lines and experimental-feature warnings would break the progress bars;
    the drivers print their own one-line summaries instead."""
    optuna.logging.set_verbosity(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def retry_callback(heartbeat: Heartbeat) -> RetryWithoutWorker:
    """What queues a failed trial again (at most ``heartbeat.max_retry`` times)."""
    return RetryWithoutWorker(max_retry=heartbeat.max_retry)


def _with_installed_driver(url: str) -> str:
    """A plain ``postgresql://`` URL names no driver and SQLAlchemy may pick one that is not installed
    (psycopg 3 in recent versions) while psycopg2, which the ``postgres`` extra installs, is: use it."""
    scheme, separator, rest = url.partition("://")
    if separator and scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg2") is not None \
            and importlib.util.find_spec("psycopg") is None:
        return f"postgresql+psycopg2://{rest}"
    return url


def open_storage(url: str, heartbeat: Heartbeat | None = None) -> BaseStorage:
    """The storage at ``url`` (see :mod:`.storage_url`). An RDB storage given ``heartbeat`` makes
    running trials beat and retries dead workers' trials; a journal file has no heartbeat (see
    :func:`fail_stale`)."""
    local = local_file(url)
    if local is not None:
        try:
            os.makedirs(local.expanduser().absolute().parent, exist_ok=True)
        except OSError as exc:
            raise RunFailure(f"cannot open storage {url}: cannot create its folder ({exc.strerror or exc})") \
                from exc
    if journal_path(url) is not None:
        return _open_journal(url)
    options = {}
    if heartbeat is not None:
        options = {"heartbeat_interval": heartbeat.interval, "grace_period": heartbeat.grace,
                   "heartbeat_stale_trial_callback": retry_callback(heartbeat)}
    if sqlite_path(url) is None:
        # a database server restarted under a running study: test each pooled connection before use
        # and reconnect, instead of failing the next query on a dead one
        options["engine_kwargs"] = {"pool_pre_ping": True}
    url = _with_installed_driver(url)
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return RDBStorage(url, **options)
        except ImportError as exc:
            raise UsageError(f"storage {url}: the database driver is not installed ({exc}); for PostgreSQL "
                             f"install psycopg2-binary (pip install 'odimo-moo[postgres]')") from exc
        except Exception as exc:  # SQLAlchemy reports bad URLs and unreachable servers in many types
            if attempt + 1 < SCHEMA_ATTEMPTS and _schema_race(exc):
                # workers started together on a new database all create Optuna's tables; all but
                # one fail on the database's unique constraints, and find the tables on a retry
                time.sleep(0.2 + random.random())
                continue
            raise RunFailure(f"cannot open storage {url}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0]}") from exc
    raise AssertionError("unreachable")


SCHEMA_ATTEMPTS = 5


def _open_journal(url: str) -> JournalStorage:
    """A journal file storage; writers take Optuna's symlink lock next to it (``<file>.lock``, the
    lock optuna-dashboard takes too), which works on local and NFS file systems."""
    path = str(journal_path(url))
    try:
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileSymlinkLock(path)))
    except (OSError, ValueError) as exc:  # unreadable, or not a journal (a line that is not a log record)
        raise RunFailure(f"cannot open storage {url}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc


def fail_stale(study: optuna.Study, config: StudyConfig) -> None:
    """Fail (and queue again) the trials of dead workers: by heartbeat on RDB storages, and on any
    storage the trials of workers on this host whose process is gone (a journal file has no
    heartbeat; a worker whose storage failed may have left its trial without one) and those that
    name no worker after the heartbeat grace."""
    optuna.storages.fail_stale_trials(study)
    fail_trials_of_dead_workers(study, retry_callback(config.heartbeat), config.heartbeat.grace)


def _schema_race(exc: Exception) -> bool:
    """Whether ``exc`` is what a concurrent creation of the storage's tables looks like."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    text = str(exc).lower()
    return isinstance(exc, IntegrityError) or (isinstance(exc, (ProgrammingError, OperationalError))
                                                and "already exists" in text)


@dataclass
class OpenedStudy:
    study: optuna.Study
    created: bool


def _directions(config: StudyConfig) -> list[str]:
    return ["maximize"] + ["minimize"] * len(config.metrics)


def open_study(config: StudyConfig, storage: BaseStorage, sampler_for: SamplerFactory) -> OpenedStudy:
    """Create the study, or join it if it exists (another worker, or a resume).

    ``sampler_for(seed)`` builds the sampler; it is passed on create and on load, since Optuna does not
    store samplers. The creator seeds it with the study seed; a joining process mixes in its process
    id so that workers started together do not propose the same points.
    """
    try:
        study = optuna.create_study(storage=storage, study_name=config.name, directions=_directions(config),
                                    sampler=sampler_for(config.seed))
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=config.name, storage=storage,
                                  sampler=sampler_for((config.seed * 1_000_003 + os.getpid()) % 2 ** 32))
        _check_same_problem(config, study)
        if study.metric_names is None:  # a study created before objectives were named
            study.set_metric_names(config.objective_names())
        return OpenedStudy(study, created=False)
    study.set_metric_names(config.objective_names())
    study.set_user_attr(IDENTITY_ATTR, config.identity())
    study.set_user_attr(CONFIG_ATTR, config.to_dict())
    study.set_user_attr(OUT_ATTR, str(config.out))
    return OpenedStudy(study, created=True)


def _stored_identity(study: optuna.Study) -> dict | None:
    """The study's problem identity; a worker joining a study created a moment ago may have to wait
    for the creator to store it."""
    for _ in range(IDENTITY_WAIT_STEPS):
        stored = study.user_attrs.get(IDENTITY_ATTR)
        if stored is not None:
            return stored
        time.sleep(IDENTITY_WAIT_S)
    return None


def _check_same_problem(config: StudyConfig, study: optuna.Study) -> None:
    stored = _stored_identity(study)
    if stored is None:
        raise UsageError(f"study {config.name!r} in {config.storage} was not created by odimo run; "
                         f"choose another name")
    detail = differences(stored, config.identity())
    if detail:
        raise UsageError(f"study {config.name!r} in {config.storage} was created for a different problem "
                         f"({detail}); use another name or output folder, or restore those settings")

