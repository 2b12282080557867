"""Components chosen by name: frozen dataclass specs built from a plain dict.

Encodings and tasks both follow this pattern (as in big_vision and levanter): a registry maps a
name to a frozen dataclass whose fields are the component's parameters. `build_spec` turns a
config dict such as `{"name": "rope", "base": 10000.0}` into that dataclass, or raises a
`ConfigError` naming the bad value and the valid choices.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from posenc_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Spec:
    """Base of named, parameterised components. Subclasses set `name` as a class attribute."""

    name: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self)}


SpecT = TypeVar("SpecT", bound=Spec)


def build_spec(kind: str, registry: Mapping[str, type[SpecT]], raw: Mapping[str, Any]) -> SpecT:
    """Instantiate `registry[raw["name"]]` with the remaining keys as its parameters."""
    params = dict(raw)
    name = params.pop("name", None)
    if name not in registry:
        raise ConfigError(
            f"Unknown {kind} {name!r}; valid choices are {sorted(registry)} "
            f"(choose one with `{kind}=<name>`)."
        )
    return construct(registry[name], params, f"{kind} {name!r}")


def construct(cls: type, values: Mapping[str, Any], where: str):
    """`cls(**values)` for a dataclass, after checking every key and value type.

    Raises ConfigError for an unknown key (listing the valid ones) or a value of the wrong type.
    An int is accepted where a float is expected, and converted.
    """
    hints = typing.get_type_hints(cls)
    valid = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in {where}; valid keys are {valid}.")
    checked = {key: _typed(where, key, value, hints[key]) for key, value in values.items()}
    return cls(**checked)


def _typed(where: str, key: str, value: Any, hint: Any) -> Any:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    allowed = typing.get_args(hint) if union else (hint,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind in (int, bool, str) and type(value) is kind:
            return value
    names = " or ".join("null" if kind is type(None) else kind.__name__ for kind in allowed)
    raise ConfigError(f"{key}={value!r} in {where} has the wrong type: expected {names}.")
