"""Domain errors. Each carries the HTTP status it maps to, once, in the API and the CLI."""

from __future__ import annotations


class PatronError(Exception):
    """Base of every error Patron raises on purpose; ``status`` is the HTTP status code."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(PatronError):
    """The thing asked for does not exist."""

    status = 404


class Conflict(PatronError):
    """The request clashes with the current state (a duplicate, a merge already undone)."""

    status = 409


class InvalidInput(PatronError):
    """Input that cannot be used; the message names the field or line that was wrong."""

    status = 422


class Unauthorized(PatronError):
    """No credentials, or credentials that are not valid."""

    status = 401


class Forbidden(PatronError):
    """Valid credentials whose role may not do this."""

    status = 403
