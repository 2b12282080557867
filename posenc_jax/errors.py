"""The one exception type for bad user input.

A `ConfigError` carries a single readable paragraph that names the bad value and the valid
choices. The CLI prints it without a traceback; library callers can catch it.
"""


class ConfigError(ValueError):
    """A setting that cannot work, explained in one paragraph."""
