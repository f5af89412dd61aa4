"""Written files follow the process umask, as open() would (mkstemp alone makes them 0600)."""

from __future__ import annotations

import os
import stat

import pytest

from odimo_moo.checkpoint import atomic_torch_save, atomic_write_json


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "result.json", {"a": 1})
        atomic_torch_save(tmp_path / "phase.pt", {"epoch": 1})
    finally:
        os.umask(previous)
    for name in ("result.json", "phase.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
