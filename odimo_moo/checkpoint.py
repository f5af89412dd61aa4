"""Atomic checkpoint files: a write is either complete on disk or not there at all.

Torch is imported by the two functions that save and load tensors, so JSON and byte writes (reports,
results) do not load it."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import RunFailure

WriteGuard = Callable[[Path], None]
_write_guard: contextvars.ContextVar[WriteGuard | None] = contextvars.ContextVar("odimo_write_guard", default=None)


@contextlib.contextmanager
def guarded_writes(guard: WriteGuard) -> Iterator[None]:
    """Call ``guard(path)`` before every atomic write of this context (checkpoints, results,
    artifacts); it raises to stop a write, e.g. when another worker has taken the trial over."""
    token = _write_guard.set(guard)
    try:
        yield
    finally:
        _write_guard.reset(token)


def _temporary(path: Path) -> str:
    """A new empty file next to ``path`` (same file system, so ``os.replace`` is atomic). Its name
    starts with a dot and ends in ``.tmp``: a write cut short (SIGKILL, power loss) leaves at most
    this file behind, never a partial ``path``."""
    guard = _write_guard.get()
    if guard is not None:
        guard(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _write_failure(path, exc) from exc
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the mode open() would
    finally:
        os.close(fd)
    return tmp


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_failure(path: Path, exc: BaseException) -> RunFailure:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
    return RunFailure(f"could not write {path} ({reason}); its previous version, if any, is intact: free "
                      f"space or fix permissions, then re-run the same command to resume")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_failure(path, exc) from exc
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_torch_save(path: Path, payload: Any) -> None:
    """``torch.save`` with the same all-or-nothing guarantee."""
    import torch

    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # torch.save reports a failed write (e.g. a full disk) as a RuntimeError of its zip writer
        # raised while handling the OSError of the file object
        cause = _os_error(exc)
        if cause is not None:
            raise _write_failure(path, cause) from exc
        raise


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError that ``exc`` is, or was raised from or while handling, if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _printable(exc: Exception, limit: int = 200) -> str:
    """``exc`` as one printable line: a corrupt file's bytes can end up in the unpickler's message."""
    text = "".join(c if c.isprintable() else "?" for c in f"{type(exc).__name__}: {exc}")
    return text if len(text) <= limit else text[:limit] + "..."


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`atomic_torch_save`; a corrupt file is a clear RunFailure."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise RunFailure(f"checkpoint {path} is unreadable ({_printable(exc)}); delete it to "
                         f"restart that phase") from exc
    if not isinstance(payload, dict) or "model" not in payload:
        raise RunFailure(f"checkpoint {path} is not an odimo-moo checkpoint; delete it to restart that phase")
    return payload


def check_writable(folder: Path) -> None:
    """Fail before any training if ``folder`` cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # a probe name of its own: workers sharing a study folder check it at the same moment
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".odimo-write-probe-")
        try:
            if os.write(handle, b"0" * 4096) < 4096:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        finally:
            os.close(handle)
            os.unlink(probe)
    except OSError as exc:
        raise RunFailure(f"output folder {folder} is not writable ({exc.strerror or exc}); choose another "
                         f"with --out or free space") from exc
