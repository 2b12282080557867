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
    if not isinstance(name, str) or name not in registry:
        raise ConfigError(
            f"Unknown {kind} {name!r}; valid choices are {sorted(registry)} "
            f"(choose one with `{kind}=<name>`)."
        )
    return construct(registry[name], params, f"{kind} {name!r}", prefix=kind)


def choice(default: str | None, choices: tuple[str, ...]) -> Any:
    """A dataclass field that takes one of `choices` (or None, if its type allows it):
    `construct` refuses any other value, and a value of the wrong type, naming the choices."""
    return dataclasses.field(default=default, metadata={"choices": choices})


def parsed(default: Any, parse: typing.Callable[[str, Any], Any]) -> Any:
    """A dataclass field whose value `construct` builds with `parse(setting, raw)`, for values
    that are not a plain int/float/bool/str (a hybrid's list of encodings); `parse` raises
    ConfigError naming `setting`, the value as the command line sets it."""
    return dataclasses.field(default=default, metadata={"parse": parse})


def construct(cls: type, values: Mapping[str, Any], where: str, prefix: str | None = None):
    """`cls(**values)` for a dataclass, after checking every key, value type and choice.
    Messages name a value as the command line sets it, `<prefix>.<key>` (just `<key>` without
    a prefix), and `where` it belongs ("section 'model'", "encoding 'rope'").

    Raises ConfigError for an unknown key (listing the valid ones), a value of the wrong type,
    or a value outside a `choice` field's choices (listing them). An int is accepted where a
    float is expected, and converted.
    """
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in {where}; valid keys are {list(fields)}.")
    checked = {}
    for key, value in values.items():
        choices = fields[key].metadata.get("choices")
        valid = ""
        if choices:
            optional = type(None) in typing.get_args(hints[key])
            valid = f"; valid choices are {list(choices)}{', or null' if optional else ''}"
        name = f"{prefix}.{key}" if prefix else key
        parse = fields[key].metadata.get("parse")
        if parse is not None:
            checked[key] = parse(f"{name}={value!r} in {where}", value)
            continue
        checked[key] = _typed(f"{name}={value!r} in {where}", value, hints[key], valid)
        if choices and checked[key] is not None and checked[key] not in choices:
            raise ConfigError(f"{name}={value!r} in {where} is unknown{valid}.")
    return cls(**checked)


def _typed(setting: str, value: Any, hint: Any, valid: str) -> Any:
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
    raise ConfigError(f"{setting} has the wrong type: expected {names}{valid}.")
