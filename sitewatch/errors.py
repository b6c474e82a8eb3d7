"""Exceptions that map to the CLI's exit codes (DESIGN.md section 7)."""

EXIT_FAILURE = 1      # runtime failure: database unreachable, schema too new, ...
EXIT_BAD_INPUT = 2    # usage or validation error; nothing was written


class SitewatchError(Exception):
    """Base class: the message is one clear line for the user."""

    exit_code = EXIT_FAILURE


class BadInput(SitewatchError):
    """The user gave something we refuse; nothing has been written.

    `field`, when known, names the option at fault (a YAML key of `url import`/`apply`): the
    write API answers it as `{"error": ..., "field": ...}`.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str = "", field: str | None = None):
        super().__init__(message)
        self.field = field


class Conflict(BadInput):
    """The change collides with what is stored: a name or URL already taken (API: 409)."""


class Missing(BadInput):
    """What the command names does not exist, or no longer (API: 404)."""


class ConfigError(BadInput):
    """A configuration key or value is wrong; the message names key, value and source."""


class Failure(SitewatchError):
    """Something outside the user's input failed (database, filesystem, ...)."""


class DatabaseUnavailable(Failure):
    """The database cannot be reached (the message never contains a password)."""


class SchemaTooNew(Failure):
    """The database was migrated by a newer sitewatch; retrying cannot fix this."""
