"""Errors raised for bad input.

Every error about user data names the case and the file it concerns and says what was
expected, so that a user with hundreds of cases on disk can find the culprit at once.
"""
from __future__ import annotations

from pathlib import Path


class SingrInputError(ValueError):
    """Bad input data or configuration.

    ``str(err)`` reads ``"case <case>: <path>: <message>"`` with the parts that are known.
    The parts are also kept as attributes (``case``, ``path``, ``reason``) for callers
    (the HTTP endpoint turns them into a JSON body).
    """

    def __init__(self, message: str, *, case: str | None = None, path: str | Path | None = None):
        self.reason = message
        self.case = case
        self.path = str(path) if path is not None else None
        prefix = []
        if case is not None:
            prefix.append(f"case {case}")
        if path is not None:
            prefix.append(str(path))
        super().__init__(": ".join(prefix + [message]))


class SingrConfigError(SingrInputError):
    """A configuration key or value that is unknown or out of range."""
