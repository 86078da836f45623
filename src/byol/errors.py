"""User-facing errors.

Anything a user can cause (bad path, bad config value, corrupt data set) raises a subclass of
:class:`ByolError`. The CLI prints its message on one line and exits with status 2, never a stack trace.
"""


class ByolError(Exception):
    """An error caused by user input, reported without a traceback."""


class ConfigError(ByolError):
    """A bad configuration key or value."""


class DataError(ByolError):
    """Missing, empty or unreadable data."""


class TrainingError(ByolError):
    """A run that had to stop (a non-finite loss, a collapse with ``train.stop_on_collapse``)."""
