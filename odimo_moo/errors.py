"""Error types with a fixed meaning for the CLI: usage errors exit 2, runtime failures exit 1."""

from __future__ import annotations


class OdimoError(Exception):
    """Base class of every error odimo-moo raises on purpose."""

    exit_code = 1


class UsageError(OdimoError):
    """The user asked for something invalid (bad config, unknown name, malformed spec)."""

    exit_code = 2


class PluginError(UsageError):
    """A plugin failed to load, registered a duplicate name, or returned the wrong type."""


class RunFailure(OdimoError):
    """Work started but could not finish (diverged training, unreadable checkpoint, I/O)."""

    exit_code = 1
