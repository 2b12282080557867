"""Sinusoidal absolute positions, added to the token embeddings (Vaswani et al. 2017, §3.5).

    PE[p, 2i]   = sin(p / base^(2i/d))
    PE[p, 2i+1] = cos(p / base^(2i/d)),    base = 10000

Even dimensions carry sines and odd dimensions cosines, interleaved, exactly as in the paper
(tensor2tensor instead concatenates all sines, then all cosines). Worked example, d = 4, p = 1:
PE = [sin 1, cos 1, sin 0.01, cos 0.01] = [0.8415, 0.5403, 0.0100, 1.0000].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding, require_frequency_base


def sinusoidal_table(positions: jax.Array, dim: int, base: float = 10000.0) -> jax.Array:
    """Sinusoidal vectors for integer positions: [...] -> [..., dim] float32."""
    pair = jnp.arange(dim) // 2  # i for dimensions 2i and 2i+1
    inv_freq = base ** (-2.0 * pair / dim)
    angles = positions[..., None].astype(jnp.float32) * inv_freq
    return jnp.where(jnp.arange(dim) % 2 == 0, jnp.sin(angles), jnp.cos(angles))


class SinusoidalEncoding(PositionalEncoding):
    def __init__(self, base: float):
        self.base = base

    def embed(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        return x + sinusoidal_table(positions, x.shape[-1], self.base).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class Sinusoidal(EncodingSpec):
    name = "sinusoidal"
    family = "absolute"
    base: float = 10000.0

    def validate(self, model) -> None:
        super().validate(model)
        require_frequency_base(self.base)

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return SinusoidalEncoding(self.base)
