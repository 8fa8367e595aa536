"""Errors that lmtune reports to the user: one clear paragraph and an exit code on the command line."""


class LmtuneError(Exception):
    """Base class: a problem lmtune explains to the user, not a bug in lmtune."""

    exit_code = 2  # bad input: nothing ran


class ConfigError(LmtuneError):
    """An invalid config file, key or value."""


class DataError(LmtuneError):
    """A data file that cannot be used: missing, unreadable, malformed or inconsistent."""


class ModelError(LmtuneError):
    """A model that cannot be loaded or adapted as asked."""


class InputError(LmtuneError):
    """An input to predict on that training would refuse (an empty text, inputs of unequal counts); `param` names it."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


class OutputError(LmtuneError):
    """An output folder or file that cannot be created or written."""


class CheckpointError(LmtuneError):
    """A checkpoint that cannot be written, found or trusted."""

    exit_code = 1


class TrainingError(LmtuneError):
    """A run that had to stop: non-finite numbers, out of memory. A checkpoint is kept where possible."""

    exit_code = 1


class Interrupted(LmtuneError):
    """The run was stopped by a signal after saving a checkpoint it can resume from."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM


class Pruned(Exception):
    """Raised by an `on_evaluate` callback to stop a run as unpromising (the search's pruner); the run is recorded as pruned."""


class SearchFailed(LmtuneError):
    """Every trial of a search failed: there is no best config."""

    exit_code = 1
