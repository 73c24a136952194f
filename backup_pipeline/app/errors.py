"""Errors of the application shell, for the person at the terminal (the CLI prints them in one line)."""


class ScanError(RuntimeError):
    """A scan that could not run; the message says why and what to do."""


class ConfigurationError(RuntimeError):
    """A setting that cannot work as given; the message names it (never its secret value)."""
