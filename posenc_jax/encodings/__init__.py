"""Positional encodings, chosen by name.

This module is the single registry: adding an encoding means one module here, one YAML in
`configs/encoding/` whose `name:` matches, and one test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from posenc_jax.encodings.abacus import Abacus
from posenc_jax.encodings.alibi import Alibi, alibi_slopes
from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding
from posenc_jax.encodings.cope import Cope
from posenc_jax.encodings.coupled import Coupled
from posenc_jax.encodings.deberta import Deberta
from posenc_jax.encodings.fire import Fire
from posenc_jax.encodings.fox import Fox
from posenc_jax.encodings.hybrid import Hybrid
from posenc_jax.encodings.kerple import Kerple
from posenc_jax.encodings.learned import Learned
from posenc_jax.encodings.nope import NoPE
from posenc_jax.encodings.path import Path
from posenc_jax.encodings.rope import Rope, apply_rope
from posenc_jax.encodings.rope_scaling import SCALINGS, rope_frequencies, yarn_attention_factor
from posenc_jax.encodings.shaw import Shaw
from posenc_jax.encodings.sinusoidal import Sinusoidal, sinusoidal_table
from posenc_jax.encodings.stick_breaking import StickBreaking
from posenc_jax.encodings.t5 import T5, t5_relative_bucket
from posenc_jax.encodings.transformer_xl import TransformerXL
from posenc_jax.encodings.xpos import Xpos, xpos_zeta
from posenc_jax.spec import build_spec

REGISTRY: dict[str, type[EncodingSpec]] = {
    spec.name: spec
    for spec in (
        NoPE,
        Sinusoidal,
        Learned,
        Shaw,
        T5,
        Deberta,
        TransformerXL,
        Rope,
        Alibi,
        Xpos,
        Kerple,
        Fire,
        Cope,
        Fox,
        StickBreaking,
        Path,
        Abacus,
        Coupled,
        Hybrid,
    )
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
    "Rope",
    "Xpos",
    "REGISTRY",
    "SCALINGS",
    "alibi_slopes",
    "apply_rope",
    "available",
    "make_encoding",
    "rope_frequencies",
    "sinusoidal_table",
    "t5_relative_bucket",
    "xpos_zeta",
    "yarn_attention_factor",
]
