"""Shared fixtures: registered SoCs and a small deterministic setting for every test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist-t10k"


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def socs():
    """The built-in SoCs, straight from their plugin modules."""
    from odimo_moo.soc_plugins import darkside, diana

    return {"diana": diana.build_diana(), "darkside": darkside.build_darkside()}
