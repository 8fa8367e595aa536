"""Errors that lmtune reports to the user: one clear paragraph, exit code 2 on the command line."""


class LmtuneError(Exception):
    """Base class: a problem with the user's input, not a bug in lmtune."""


class ConfigError(LmtuneError):
    """An invalid config file, key or value."""


class DataError(LmtuneError):
    """A data file that cannot be used: missing, unreadable, malformed or inconsistent."""


class ModelError(LmtuneError):
    """A model that cannot be loaded or adapted as asked."""
