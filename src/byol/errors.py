"""User-facing errors.

Anything a user can cause (bad path, bad config value, corrupt data set) raises a subclass of
:class:`ByolError`. The CLI prints its message on one line and exits with status 2, never a stack trace.
"""


class ByolError(Exception):
    """An error caused by user input, reported without a traceback, on one line: a line break inside the
    message (e.g. from a user's value or key) is shown as ``\\n``."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"), *args)


class ConfigError(ByolError):
    """A bad configuration key or value."""


class DataError(ByolError):
    """Missing, empty or unreadable data."""


class TrainingError(ByolError):
    """A run that had to stop (a non-finite loss, a collapse with ``train.stop_on_collapse``)."""
