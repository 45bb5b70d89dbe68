"""Exceptions for refused requests; the CLI prints them and the API turns them into problems."""


class UserFacingError(Exception):
    """A request refused with a message that names what was wrong and where."""


class NotFoundError(UserFacingError):
    """The object does not exist, or the caller may not see it (both answer 404)."""


class FormatError(UserFacingError):
    """A whole input (file, sheet, mapping) is unusable; per-record problems are ``...Issue`` values."""


class ConflictError(UserFacingError):
    """The request is valid but the object's current state refuses it (a service already terminated...)."""
