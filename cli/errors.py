"""The command line's one error type."""
from __future__ import annotations


class CLIError(Exception):
    """A user mistake: printed as one line, exit status 2."""
