"""Rotary position embedding, RoPE (Su et al. 2021, "RoFormer", §3.4).

Each pair of query/key dimensions (x1, x2) at position p is rotated by the angle p·θ_i:

    θ_i = base^(-2i/d),  i = 0 .. d/2-1,  d = head_dim, base = 10000
    x1' = x1·cos(pθ_i) − x2·sin(pθ_i)
    x2' = x1·sin(pθ_i) + x2·cos(pθ_i)

so that <R(m)q, R(n)k> depends on m and n only through m − n, and every rotation keeps norms.
The rotation is applied element-wise, never as a dense [d, d] matrix.

Two layouts pair the dimensions differently; they are the same map up to a fixed permutation:
- "interleaved": pairs (2i, 2i+1), as in the paper and the original RoFormer/Mesh code;
- "half": pairs (i, i + d/2), the "rotate_half" layout of GPT-NeoX and HF LLaMA.

Shapes: x [batch, seq, heads, head_dim]; positions [batch, seq] int.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding
from posenc_jax.errors import ConfigError

LAYOUTS = ("interleaved", "half")


def rope_inverse_frequencies(head_dim: int, base: float = 10000.0) -> jax.Array:
    """θ_i = base^(-2i/head_dim) for i = 0 .. head_dim/2 - 1: [head_dim // 2] float32."""
    return base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)


def apply_rope(
    x: jax.Array, positions: jax.Array, base: float = 10000.0, layout: str = "interleaved"
) -> jax.Array:
    """Rotate x [batch, seq, heads, head_dim] by its positions [batch, seq]."""
    head_dim = x.shape[-1]
    angles = positions[..., None].astype(jnp.float32) * rope_inverse_frequencies(head_dim, base)
    cos = jnp.cos(angles)[..., None, :]  # [batch, seq, 1, head_dim/2], broadcast over heads
    sin = jnp.sin(angles)[..., None, :]
    xf = x.astype(jnp.float32)
    if layout == "interleaved":
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
    else:
        x1, x2 = jnp.split(xf, 2, axis=-1)
    r1 = x1 * cos - x2 * sin
    r2 = x1 * sin + x2 * cos
    if layout == "interleaved":
        rotated = jnp.stack([r1, r2], axis=-1).reshape(x.shape)
    else:
        rotated = jnp.concatenate([r1, r2], axis=-1)
    return rotated.astype(x.dtype)


class RotaryEncoding(PositionalEncoding):
    def __init__(self, base: float, layout: str):
        self.base = base
        self.layout = layout

    def rotate_qk(self, q, k, q_positions, k_positions):
        return (
            apply_rope(q, q_positions, self.base, self.layout),
            apply_rope(k, k_positions, self.base, self.layout),
        )


@dataclasses.dataclass(frozen=True)
class Rope(EncodingSpec):
    name = "rope"
    base: float = 10000.0
    layout: str = "interleaved"

    def validate(self, model) -> None:
        super().validate(model)
        if model.head_dim % 2:
            raise ConfigError(
                f"RoPE rotates pairs of dimensions, but the head dimension is odd: "
                f"model.d_model={model.d_model} / model.num_heads={model.num_heads} = "
                f"{model.head_dim}. Choose d_model and num_heads so that d_model / num_heads is even."
            )
        if self.layout not in LAYOUTS:
            raise ConfigError(
                f"encoding.layout={self.layout!r} is unknown; valid choices are {list(LAYOUTS)}."
            )
        if not self.base > 1:
            raise ConfigError(f"encoding.base={self.base} must be greater than 1.")

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return RotaryEncoding(self.base, self.layout)
