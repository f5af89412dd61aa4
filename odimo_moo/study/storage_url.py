"""The ``storage:`` of a study: an RDB URL (SQLAlchemy: SQLite, PostgreSQL, MySQL) or an Optuna
journal file, spelled ``journal:///abs/path`` once validated.

A journal file is given as ``journal:///path``, ``journal://relative/path`` or a plain path ending
in ``.log`` or ``.journal``; relative paths are resolved against the working folder.
"""

from __future__ import annotations

from pathlib import Path

JOURNAL_PREFIX = "journal://"
JOURNAL_SUFFIXES = (".log", ".journal")
FORMS = ("a SQLAlchemy URL such as sqlite:///study.db or postgresql+psycopg2://user@host/db, or an Optuna "
         "journal file (a path ending in .log or .journal, or journal:///path)")


def normalize(text: str) -> str:
    """The canonical spelling of a storage; ValueError (with the accepted forms) if it is none."""
    if text.startswith(JOURNAL_PREFIX):
        path = text[len(JOURNAL_PREFIX):]
        if not path.strip("/"):
            raise ValueError(f"journal storage {text!r} names no file; give journal:///path/to/study.log")
        return journal_url(Path(path))
    if "://" in text:
        return text
    if Path(text).suffix in JOURNAL_SUFFIXES:
        return journal_url(Path(text))
    raise ValueError(f"must be {FORMS}, got {text!r}")


def journal_url(path: Path) -> str:
    return f"{JOURNAL_PREFIX}{path.expanduser().resolve()}"


def journal_path(url: str) -> Path | None:
    """The file of a (normalized) journal storage; None for any other storage."""
    return Path(url[len(JOURNAL_PREFIX):]) if url.startswith(JOURNAL_PREFIX) else None


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite storage; None for any other storage (or an in-memory database)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix):] in ("", ":memory:"):
        return None
    return Path(url[len(prefix):])


def local_file(url: str) -> Path | None:
    """The file holding a file-based storage (SQLite or journal), None for a database server."""
    return journal_path(url) or sqlite_path(url)


def for_dashboard(url: str) -> str:
    """The storage as ``optuna-dashboard`` takes it: a journal as its plain path, anything else as is."""
    path = journal_path(url)
    return str(path) if path is not None else url
