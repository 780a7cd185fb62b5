"""Errors a user can fix. The CLI prints them as one line (no traceback unless --debug)."""


class TeachloopError(Exception):
    """Base class: the message names the thing to fix."""


class ConfigError(TeachloopError):
    pass


class BackendUnavailable(TeachloopError):
    pass


class InputFileError(TeachloopError):
    pass


class StoreError(TeachloopError):
    pass


class CatalogUnavailable(StoreError):
    """A lake's catalog (PostgreSQL) stayed unreachable longer than the store waits for it."""
