"""Positional encodings, chosen by name.

This module is the single registry: adding an encoding means one module here, one YAML in
`configs/encoding/` whose `name:` matches, and one test.
"""

from __future__ import annotations

from typing import Any, Mapping

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding
from posenc_jax.encodings.learned import Learned
from posenc_jax.encodings.nope import NoPE
from posenc_jax.encodings.rope import Rope, apply_rope, rope_inverse_frequencies
from posenc_jax.encodings.sinusoidal import Sinusoidal, sinusoidal_table
from posenc_jax.spec import build_spec

REGISTRY: dict[str, type[EncodingSpec]] = {
    spec.name: spec for spec in (NoPE, Sinusoidal, Learned, Rope)
}


def available() -> list[str]:
    """The sorted names of all encodings."""
    return sorted(REGISTRY)


def make_encoding(raw: Mapping[str, Any]) -> EncodingSpec:
    """Build an encoding spec from `{"name": ..., **params}`; raises ConfigError if unknown."""
    return build_spec("encoding", REGISTRY, raw)


__all__ = [
    "EncodingSpec",
    "PositionalEncoding",
    "REGISTRY",
    "apply_rope",
    "available",
    "make_encoding",
    "rope_inverse_frequencies",
    "sinusoidal_table",
]
