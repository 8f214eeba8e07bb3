"""Exception types raised by chronoflow.

Every error a user can cause derives from :class:`ChronoflowError`, so the CLI can print it as
one line instead of a traceback.
"""

from __future__ import annotations

__all__ = ["ChronoflowError", "CatalogueError", "ModelError", "DomainError", "first_line"]


class ChronoflowError(ValueError):
    """Base class for errors caused by input or environment, reported as one line."""


class CatalogueError(ChronoflowError):
    """A catalogue file or table is missing, corrupt, or violates the schema."""


class ModelError(ChronoflowError):
    """A model artifact is missing, corrupt, or incompatible with this version."""


class DomainError(ChronoflowError):
    """An input lies outside what the model or the function can handle."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), so that an error
    from a library quoted in one of ours keeps it one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
