"""optuna-dashboard on a study run by ``odimo run``: served on 127.0.0.1 from a thread (the package's
WSGI app, given the storage as ``odimo run``'s suggested command gives it), its HTTP API shows the
objectives by name, every trial with its test accuracy, costs and feasibility, and each trial's files
from the study's artifact store (on SQLite and journal storages).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from odimo_moo.study.storage_url import for_dashboard
from test_study_drivers import odimo, toy_config

dashboard = pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed; "
                                                           "pip install 'odimo-moo[dashboard]'")


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        """No access log lines in the test output."""


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(storage, artifact_dir)`` -> base URL of optuna-dashboard serving them (``storage`` as
    the ``optuna-dashboard`` command takes it)."""
    from optuna.artifacts import FileSystemArtifactStore

    servers: list[WSGIServer] = []

    def start(storage: str, artifact_dir: Path) -> str:
        app = dashboard.wsgi(storage, artifact_store=FileSystemArtifactStore(str(artifact_dir)))
        server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200, url
        return response.read()


def _attrs(items: list[dict[str, str]]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in items}


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_dashboard_shows_objective_names_trials_and_artifacts(tmp_path, serve, storage, capsys):
    url = f"journal://{tmp_path / 'study.log'}" if storage == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    config = toy_config(tmp_path, storage=url, trials=2, constraints={"latency_cycles": {"max": 12000}})
    assert odimo("run", str(config), "--no-report") == 0
    command = f"optuna-dashboard {for_dashboard(url)} --artifact-dir {tmp_path / 'out' / 'artifacts'}"
    assert command in capsys.readouterr().out  # what odimo run suggests
    base = serve(for_dashboard(url), tmp_path / "out" / "artifacts")
    studies = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
    assert [s["study_name"] for s in studies] == ["toy"]
    study_id = studies[0]["study_id"]
    detail = json.loads(_get(f"{base}/api/studies/{study_id}"))
    assert detail["objective_names"] == ["val_accuracy", "latency_cycles"]
    assert detail["directions"] == ["maximize", "minimize"]
    trials = detail["trials"]
    assert [t["state"] for t in trials] == ["Complete", "Complete"]
    first = _attrs(trials[0]["user_attrs"])
    assert float(first["test_accuracy"]) == 0.95 and float(first["latency_cycles"]) == 15000.0
    assert first["feasible"] == "False"
    for trial in trials:
        names = {a["filename"]: a for a in trial["artifacts"]}
        assert {"result.json", "mapping.png"} <= set(names), names
        body = _get(f"{base}/artifacts/{study_id}/{trial['trial_id']}/{names['result.json']['artifact_id']}")
        assert "lambda" in json.loads(body)
        assert _get(f"{base}/artifacts/{study_id}/{trial['trial_id']}/{names['mapping.png']['artifact_id']}")[:4] \
            == b"\x89PNG"
