"""A plain postgresql:// URL uses psycopg2 when that is the driver installed (the postgres extra)."""

from __future__ import annotations

import importlib.util

import pytest

from odimo_moo.study import storage


@pytest.mark.parametrize("installed, url, expected", [
    ({"psycopg2"}, "postgresql://u:p@host/db", "postgresql+psycopg2://u:p@host/db"),
    ({"psycopg2"}, "postgres://host/db", "postgresql+psycopg2://host/db"),
    ({"psycopg2", "psycopg"}, "postgresql://host/db", "postgresql://host/db"),
    (set(), "postgresql://host/db", "postgresql://host/db"),
    ({"psycopg2"}, "postgresql+psycopg2://host/db", "postgresql+psycopg2://host/db"),
    ({"psycopg2"}, "sqlite:///study.db", "sqlite:///study.db"),
])
def test_plain_postgresql_url_gets_the_installed_driver(monkeypatch, installed, url, expected):
    real = importlib.util.find_spec
    monkeypatch.setattr(storage.importlib.util, "find_spec",
                        lambda name, *a: object() if name in installed else
                        (None if name in ("psycopg", "psycopg2") else real(name, *a)))
    assert storage._with_installed_driver(url) == expected
