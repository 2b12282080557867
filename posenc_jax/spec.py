"""Components chosen by name: frozen dataclass specs built from a plain dict.

Encodings and tasks both follow this pattern (as in big_vision and levanter): a registry maps a
name to a frozen dataclass whose fields are the component's parameters. `build_spec` turns a
config dict such as `{"name": "rope", "base": 10000.0}` into that dataclass, or raises a
`ConfigError` naming the bad value and the valid choices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

from posenc_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Spec:
    """Base of named, parameterised components. Subclasses set `name` as a class attribute."""

    name: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self)}


def build_spec(kind: str, registry: Mapping[str, type[Spec]], raw: Mapping[str, Any]) -> Spec:
    """Instantiate `registry[raw["name"]]` with the remaining keys as its parameters."""
    params = dict(raw)
    name = params.pop("name", None)
    if name not in registry:
        raise ConfigError(
            f"Unknown {kind} {name!r}; valid choices are {sorted(registry)} "
            f"(choose one with `{kind}=<name>`)."
        )
    cls = registry[name]
    valid = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(
            f"Unknown parameter(s) {unknown} for {kind} {name!r}; its parameters are {valid}."
        )
    return cls(**params)
