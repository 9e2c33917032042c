"""The one exception type for bad input: a user-facing message naming the problem."""


class AnatomyError(ValueError):
    """Bad input or configuration, detected before expensive work; the message says what to fix."""
