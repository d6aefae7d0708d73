"""The one base class of errors a user can act on.

A :class:`UserError` says in one line what is wrong and where (a bad configuration value, an unreadable
URI, a stage input that does not fit, a training job that failed for a stated reason). The CLI and the
pipeline's components print its message without a traceback and exit non-zero; any other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message tells the user what to change."""


class StageError(UserError, RuntimeError):
    """A stage cannot run with the inputs it was given; the message says why in one line."""
