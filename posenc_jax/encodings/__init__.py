"""Positional encodings, chosen by name.

This module is the single registry: adding an encoding means one module here, one YAML in
`configs/encoding/` whose `name:` matches, and one test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.alibi import Alibi, alibi_slopes
from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding
from posenc_jax.encodings.cope import Cope
from posenc_jax.encodings.deberta import Deberta
from posenc_jax.encodings.fire import Fire
from posenc_jax.encodings.kerple import Kerple
from posenc_jax.encodings.learned import Learned
from posenc_jax.encodings.nope import NoPE
from posenc_jax.encodings.rope import Rope, apply_rope
from posenc_jax.encodings.rope_scaling import SCALINGS, rope_frequencies, yarn_attention_factor
from posenc_jax.encodings.shaw import Shaw
from posenc_jax.encodings.sinusoidal import Sinusoidal, sinusoidal_table
from posenc_jax.encodings.t5 import T5, t5_relative_bucket
from posenc_jax.encodings.transformer_xl import TransformerXL
from posenc_jax.encodings.xpos import Xpos, xpos_zeta
from posenc_jax.errors import ConfigError
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
    )
}


def available() -> list[str]:
    """The sorted names of all encodings."""
    return sorted(REGISTRY)


def make_encoding(raw: Mapping[str, Any]) -> EncodingSpec:
    """Build an encoding spec from `{"name": ..., **params}`; raises ConfigError if unknown."""
    return build_spec("encoding", REGISTRY, raw)


def attention_bias(
    name: str,
    q_len: int,
    k_len: int,
    num_heads: int,
    causal: bool = False,
    seed: int = 0,
    layer: int = 0,
    **params,
) -> jax.Array:
    """The content-independent logit bias of encoding `name`: [num_heads, q_len, k_len].

    Queries sit at positions 0..q_len-1 and keys at 0..k_len-1. A learned bias (t5, kerple,
    fire) is shown at its initialisation from `seed`; per-layer ones (kerple, fire) for `layer`
    of a model with two layers. An encoding that adds no such bias raises ConfigError.
    """
    module = _build_alone(name, num_heads, causal, seed, params)
    if not 0 <= layer < _LAYERS_ALONE:
        raise ConfigError(
            f"layer={layer} is out of range; attention_bias shows layers 0..{_LAYERS_ALONE - 1}."
        )
    if not _adds_logit_bias(module):
        with_bias = [n for n in available() if _adds_logit_bias(_build_alone(n, 2, causal, 0, {}))]
        raise ConfigError(
            f"Encoding {name!r} adds no content-independent bias to the attention logits, so it "
            f"has no attention_bias; the encodings that do are {with_bias}."
        )
    return module.logit_bias(jnp.arange(q_len)[None, :], jnp.arange(k_len)[None, :], layer)[0]


_LAYERS_ALONE = 2  # layers of the model an encoding is built for by attention_bias


def _build_alone(name: str, num_heads: int, causal: bool, seed: int, params: Mapping[str, Any]):
    # Imported here: config imports this package, so a top-level import would be circular.
    from posenc_jax.config import ModelConfig

    spec = make_encoding({"name": name, **params})
    model = ModelConfig(
        d_model=2 * num_heads, num_heads=num_heads, num_layers=_LAYERS_ALONE, causal=causal
    )
    spec.validate(model)
    return spec.build(model, nnx.Rngs(seed))


def _adds_logit_bias(module: PositionalEncoding) -> bool:
    return type(module).logit_bias is not PositionalEncoding.logit_bias


__all__ = [
    "EncodingSpec",
    "PositionalEncoding",
    "Rope",
    "Xpos",
    "REGISTRY",
    "SCALINGS",
    "alibi_slopes",
    "attention_bias",
    "apply_rope",
    "available",
    "make_encoding",
    "rope_frequencies",
    "sinusoidal_table",
    "t5_relative_bucket",
    "xpos_zeta",
    "yarn_attention_factor",
]
