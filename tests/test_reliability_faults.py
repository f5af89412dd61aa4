"""Reliability, faults: SIGKILL in every phase and in the middle of a checkpoint write, diverging
training, unwritable and full output folders. A killed or failed run costs at most the epoch in
progress: re-running the same command resumes from the last complete checkpoint.

tests/test_search_cli.py::test_search_resumes_after_sigkill covers a kill during the search phase;
here a run is killed once in each phase (warmup, search, fine-tune) and must then finish as if it
had never stopped (same result as an uninterrupted run).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from odimo_moo.checkpoint import atomic_torch_save, atomic_write_bytes, check_writable, load_checkpoint
from odimo_moo.cli import main
from odimo_moo.errors import RunFailure

TINY = ["--soc", "diana", "--model", "resnet8", "--dataset", "digits", "--data-limit", "120", "--device", "cpu",
        "--no-progress", "--set", "batch_size=32"]
EPOCHS = ["--set", "warmup_epochs=3", "--set", "search_epochs=3", "--set", "finetune_epochs=3"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
ENV.pop("ODIMO_DEBUG", None)


def odimo(*args: str) -> list[str]:
    return [sys.executable, "-m", "odimo_moo.cli", *args]


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(process: subprocess.Popen, found, what: str, timeout: float = 600) -> Path:
    """Poll until ``found()`` returns a path; fail if the process ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = found()
        if path is not None:
            return path
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before {what}: {process.stderr.read()}")
        time.sleep(0.01)
    process.kill()
    pytest.fail(f"timed out waiting for {what}")


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def epoch_of(path: Path) -> int:
    return int(load_checkpoint(path)["epoch"])


def phase_epochs(history: list[dict]) -> dict[str, list[int]]:
    epochs: dict[str, list[int]] = {}
    for row in history:
        epochs.setdefault(row["phase"], []).append(row["epoch"])
    return epochs


# -- SIGKILL in every phase ----------------------------------------------------------------------

def test_sigkill_in_each_phase_then_resume_finishes_as_if_uninterrupted(tmp_path: Path, capsys):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    argv = odimo("search", *TINY, *EPOCHS, "--lambda", "1e-5", "--out", str(killed))
    warmup = lambda: next(killed.glob("warmup-cache/warmup-*/warmup.pt"), None)  # noqa: E731
    search = killed / "checkpoints" / "search.pt"
    finetune = killed / "checkpoints" / "finetune.pt"

    # 1. during warmup: its first epoch is on disk, the other two are not
    process = start(argv)
    wait_for(process, warmup, "the first warmup checkpoint")
    kill(process)
    assert 1 <= epoch_of(warmup()) < 3 and not search.exists()

    # 2. during search: warmup complete, search cut short
    process = start(argv)
    wait_for(process, lambda: search if search.exists() else None, "the first search checkpoint")
    kill(process)
    assert epoch_of(warmup()) == 3 and 1 <= epoch_of(search) < 3 and not finetune.exists()

    # 3. during fine-tune
    process = start(argv)
    wait_for(process, lambda: finetune if finetune.exists() else None, "the first fine-tune checkpoint")
    kill(process)
    assert epoch_of(search) == 3 and 1 <= epoch_of(finetune) < 3 and not (killed / "result.json").exists()

    # 4. the same command finishes the run; every epoch of every phase ran exactly once
    assert main(argv[3:]) == 0, capsys.readouterr().err
    history = json.loads((killed / "metrics.json").read_text())
    assert phase_epochs(history) == {"warmup": [1, 2, 3], "search": [1, 2, 3], "finetune": [1, 2, 3]}

    # ... and gives what a run that was never interrupted gives (model, mapping and metrics)
    assert main(["search", *TINY, *EPOCHS, "--lambda", "1e-5", "--out", str(clean)]) == 0
    capsys.readouterr()
    resumed, reference = (json.loads((folder / "result.json").read_text()) for folder in (killed, clean))
    for key in ("accuracy", "val_accuracy", "latency_cycles", "energy_uj", "channel_split"):
        assert resumed[key] == reference[key], key
    assert json.loads((killed / "mapping.json").read_text()) == json.loads((clean / "mapping.json").read_text())
    for row_a, row_b in zip(history, json.loads((clean / "metrics.json").read_text())):
        assert row_a["val_loss"] == pytest.approx(row_b["val_loss"], rel=1e-6), (row_a, row_b)

    # 5. re-running a finished run retrains nothing and keeps the result
    assert main(["search", *TINY, *EPOCHS, "--lambda", "1e-5", "--out", str(killed), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)[0]
    assert {k: v for k, v in again.items() if k != "wall_time_s"} == \
        {k: v for k, v in resumed.items() if k != "wall_time_s"}
    assert phase_epochs(json.loads((killed / "metrics.json").read_text())) == phase_epochs(history)
    before = (killed / "result.json").read_text()

    # 6. the same folder with other settings is refused, not silently resumed, and nothing is lost
    assert main(["search", *TINY, *EPOCHS, "--lambda", "1e-3", "--out", str(killed)]) == 2
    err = capsys.readouterr().err
    assert f"{search} is a checkpoint of a run with other settings" in err and err.count("\n") == 1
    assert (killed / "result.json").read_text() == before and epoch_of(search) == 3


def test_a_second_search_on_the_same_folder_is_refused(tmp_path: Path, capsys):
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".odimo-search.lock", "w") as held:  # as a running `odimo search` holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["search", *TINY, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"odimo search: error: another `odimo search` is running in {out}; wait "
                                       f"for it, or choose another --out\n")
    assert not (out / "checkpoints").exists()


# -- SIGKILL in the middle of a checkpoint write -------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    from odimo_moo.checkpoint import atomic_torch_save
    path = Path(sys.argv[1])
    version = int(sys.argv[2])
    print("ready", flush=True)
    while True:
        version += 1
        # ~16 MB: each write takes long enough to be interrupted
        atomic_torch_save(path, {"model": {"w": torch.full((4_000_000,), float(version))}, "epoch": version})
        print(version, flush=True)
""")


def test_sigkill_during_checkpoint_writes_never_leaves_a_partial_checkpoint(tmp_path: Path):
    path = tmp_path / "checkpoints" / "search.pt"
    atomic_torch_save(path, {"model": {"w": torch.full((4_000_000,), 0.0)}, "epoch": 0})
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(0)
    caught_mid_write = 0
    for round_ in range(3):  # one kill aimed at a write, two at random moments
        before = epoch_of(path)
        process = subprocess.Popen([sys.executable, str(script), str(path), str(before)], env=ENV,
                                   stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        if round_ == 0:  # kill exactly while a temporary file is being filled
            wait_for(process, lambda: writing(path), "a write in progress")
        else:  # kill at a random moment
            time.sleep(rng.uniform(0.05, 1.5))
        in_progress = writing(path)
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
        caught_mid_write += in_progress is not None
        payload = load_checkpoint(path)  # the checkpoint is always a complete one
        version = int(payload["epoch"])
        assert version >= before
        assert bool((payload["model"]["w"] == float(version)).all())
        # what a kill leaves behind is a hidden temporary file, never read as a checkpoint
        assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == ["search.pt"]
        for leftover in path.parent.glob(".search.pt.*.tmp"):
            leftover.unlink()
    assert caught_mid_write >= 1


def writing(path: Path) -> Path | None:
    """A temporary file of ``path`` that is being filled, if any."""
    for candidate in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if candidate.stat().st_size > 0:
                return candidate
        except FileNotFoundError:  # renamed into place meanwhile
            continue
    return None


# -- diverging training ---------------------------------------------------------------------------

@pytest.mark.parametrize("phase, extra", [
    ("warmup", ["--set", "lr=1e30", "--set", "warmup_epochs=1"]),
    ("search", ["--lambda", "1e305", "--set", "warmup_epochs=0"]),
], ids=["warmup-lr-1e30", "search-lambda-1e305"])
def test_diverging_training_is_a_clean_runtime_error(tmp_path: Path, capsys, phase, extra):
    out = tmp_path / "run"
    code = main(["search", *TINY, "--set", "search_epochs=1", "--set", "finetune_epochs=1", *extra,
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith(f"odimo search: error: {phase} epoch 1: training diverged: loss is ")
    assert err.rstrip().endswith("try a lower lr or lambda") and err.count("\n") == 1
    assert not (out / "result.json").exists()


# -- unwritable and full output folders -----------------------------------------------------------

def test_unwritable_output_folder_fails_before_training(tmp_path: Path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for out in (blocker / "sub", Path("/proc/odimo-test/run")):
        started = time.time()
        assert main(["search", *TINY, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"odimo search: error: output folder {out} is not writable (") and err.count("\n") == 1
        assert time.time() - started < 60
    assert not list(tmp_path.rglob("*.pt")), "nothing may be trained"


def test_study_with_unwritable_output_or_storage_fails_before_training(tmp_path: Path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    quick = ["--set", "training.warmup_epochs=1", "--set", "data_limit=60", "--no-progress", "--no-report"]
    assert main(["run", *quick, "--out", str(blocker / "study")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"odimo run: error: output folder {blocker / 'study'} is not writable (Not a directory)")
    out = tmp_path / "study"
    assert main(["run", *quick, "--out", str(out), "--storage", f"sqlite:///{blocker}/sub/study.db"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("odimo run: error: ") and "Not a directory" in err and err.count("\n") == 1
    assert not list(tmp_path.rglob("*.pt")), "nothing may be trained"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 16 MiB tmpfs (needs root and mount(2); skipped where the sandbox does not allow it)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({result.stderr.strip() or 'mount failed'}); "
                    f"test_disk_full_simulated covers the same path by monkeypatching")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for chunk in (b"\0" * 65536, b"\0"):
            try:
                while handle.write(chunk):
                    pass
            except OSError:
                pass
    return filler


def test_full_disk_before_the_run_is_refused_before_training(small_disk: Path, capsys):
    fill(small_disk)
    assert main(["search", *TINY, "--out", str(small_disk / "run")]) == 1
    err = capsys.readouterr().err
    assert err == (f"odimo search: error: output folder {small_disk / 'run'} is not writable (No space left on "
                   f"device); choose another with --out or free space\n")


def test_disk_filling_up_during_the_run_keeps_the_last_checkpoint(small_disk: Path, capsys):
    """Another process fills the disk right after the first warmup checkpoint: the next write fails
    cleanly, the checkpoint on disk stays complete, and once space is back the run resumes."""
    out = small_disk / "run"
    argv = ["search", *TINY, "--set", "warmup_epochs=3", "--set", "search_epochs=1", "--set", "finetune_epochs=1",
            "--out", str(out)]
    found: list[Path] = []

    def filler() -> None:  # stands in for another job writing to the same disk
        deadline = time.time() + 600
        while not found and time.time() < deadline:
            found.extend(out.glob("warmup-cache/warmup-*/warmup.pt"))
            time.sleep(0.005)
        if found:
            fill(small_disk)

    thread = threading.Thread(target=filler, daemon=True)
    thread.start()
    code = main(argv)
    thread.join(timeout=600)
    err = capsys.readouterr().err
    assert found and code == 1, err
    path = found[0]
    assert err.startswith(f"odimo search: error: could not write {path} (No space left on device); its previous "
                          f"version, if any, is intact") and err.count("\n") == 1, err
    assert 1 <= epoch_of(path) < 3 and not list(path.parent.glob("*.tmp"))
    (small_disk / "filler").unlink()  # space is back: the same command resumes
    assert main(argv) == 0
    assert phase_epochs(json.loads((out / "metrics.json").read_text()))["warmup"] == [1, 2, 3]


def test_disk_full_simulated(tmp_path: Path, monkeypatch):
    """Where no tmpfs can be mounted: the writes themselves report ENOSPC as a RunFailure and leave
    the previous checkpoint in place."""
    path = tmp_path / "ck.pt"
    atomic_torch_save(path, {"model": {"w": torch.ones(3)}, "epoch": 1})
    real_open = open

    class FullFile:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def full_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return FullFile(handle) if "w" in mode and ".tmp" in str(file) else handle

    import builtins

    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(RunFailure, match=r"could not write .*ck.pt \(No space left on device\); its previous "
                                         r"version, if any, is intact"):
        atomic_torch_save(path, {"model": {"w": torch.zeros(1000)}, "epoch": 2})
    with pytest.raises(RunFailure, match="No space left on device"):
        atomic_write_bytes(tmp_path / "result.json", b"{}")
    monkeypatch.undo()
    assert epoch_of(path) == 1 and not list(tmp_path.glob(".*.tmp"))


def test_check_writable_names_the_folder_and_the_reason(tmp_path: Path):
    (tmp_path / "f").write_text("")
    with pytest.raises(RunFailure, match=r"output folder .*/f/x is not writable \(Not a directory\)"):
        check_writable(tmp_path / "f" / "x")
    check_writable(tmp_path / "new" / "deep")
    assert (tmp_path / "new" / "deep").is_dir() and not list((tmp_path / "new" / "deep").iterdir())


def test_check_writable_from_many_workers_at_once(tmp_path: Path):
    """Workers of one study check the shared output folder at the same moment: no worker may see
    another's probe file vanish (CI once failed a 4-worker study this way)."""
    folder = tmp_path / "study"
    failures: list[RunFailure] = []

    def worker() -> None:
        for _ in range(200):
            try:
                check_writable(folder)
            except RunFailure as exc:
                failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[0]
    assert not list(folder.iterdir())
