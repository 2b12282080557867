"""The one exception type for bad user input.

A `ConfigError` carries a single readable paragraph that names the bad value and the valid
choices. The CLI prints it without a traceback; library callers can catch it.
"""

import math


class ConfigError(ValueError):
    """A setting that cannot work, explained in one paragraph."""


def described(error: BaseException) -> str:
    """An exception as a ConfigError quotes it: its type and the first line of its message
    (at most 200 characters), since a library's own message may run to many lines."""
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {first}"


def require_positive_finite(name: str, value: float) -> None:
    """Raise ConfigError("name=value must be positive and finite.") unless 0 < value < inf."""
    if not (value > 0 and math.isfinite(value)):  # NaN fails both
        raise ConfigError(f"{name}={value} must be positive and finite.")


def require_finite_at_least(name: str, value: float, minimum: float) -> None:
    """Raise ConfigError unless minimum <= value < inf (NaN fails)."""
    if not (value >= minimum and math.isfinite(value)):
        raise ConfigError(f"{name}={value} must be finite and at least {minimum}.")


def require_at_least(name: str, value: int | float, minimum: int | float) -> None:
    """Raise ConfigError("name=value must be at least minimum.") unless value >= minimum."""
    if not value >= minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}.")


def require_positive(name: str, value: int | float) -> None:
    """Raise ConfigError("name=value must be positive.") unless value > 0."""
    if not value > 0:
        raise ConfigError(f"{name}={value!r} must be positive.")


def require_int(name: str, value: object, minimum: int) -> None:
    """Raise ConfigError unless value is an int (not a bool) and at least minimum."""
    if type(value) is not int or value < minimum:
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}.")


def require_seed(name: str, seed: object) -> None:
    """Seeds become JAX PRNG keys, which hold 64 bits: an integer in [0, 2^63)."""
    if type(seed) is not int or not 0 <= seed < 2**63:
        raise ConfigError(f"{name}={seed!r} must be an integer in [0, 2^63).")
