"""xPos: RoPE with an exponential decay/extrapolation scale (Sun et al. 2022, "A
Length-Extrapolatable Transformer"), as in the authors' torchscale code.

Each rotated pair i of a query at position n is multiplied by ζ_i^(n/γ), and of a key at
position m by ζ_i^(−m/γ), so their product carries ζ_i^((n−m)/γ): relative, like RoPE, and, since
ζ_i < 1, decaying with distance in a decoder (n >= m). Fast-rotating pairs decay fastest.

    ζ_i = (2i + λ·d) / ((1 + λ)·d),  i = 0 .. d/2-1,  λ = 0.4,  γ = scale_base = 512
    q'_n = RoPE(q, n) ⊙ ζ^(n/γ),     k'_m = RoPE(k, m) ⊙ ζ^(−m/γ)

Example, d = 4: ζ = [1.6/5.6, 3.6/5.6] = [0.2857, 0.6429]. The rotation uses the interleaved
pairs (2i, 2i+1) of the authors' code. torchscale centres positions before scaling to keep the
numbers small; that shift cancels in q·k, so positions are used as given here.

In an encoder, keys to the right of the query (m > n) are amplified rather than decayed: the
formula is the paper's, which was designed for decoders; it is applied unchanged.

Shapes: x [batch, seq, heads, head_dim]; positions [batch, seq].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding
from posenc_jax.encodings.rope import Rope, apply_rope


def xpos_zeta(head_dim: int, gamma: float = 0.4) -> jax.Array:
    """ζ_i = (2i + γ·d) / ((1 + γ)·d): [head_dim // 2] float32."""
    return (jnp.arange(0, head_dim, 2, dtype=jnp.float32) + gamma * head_dim) / ((1 + gamma) * head_dim)


def apply_xpos(
    x: jax.Array, positions: jax.Array, base: float, scale_base: float, downscale: bool, gamma: float = 0.4
) -> jax.Array:
    """RoPE-rotate x [batch, seq, heads, head_dim], then scale pair i by ζ_i^(±position/scale_base)."""
    exponent = positions[..., None].astype(jnp.float32) / scale_base  # [batch, seq, 1]
    scale = xpos_zeta(x.shape[-1], gamma) ** (-exponent if downscale else exponent)
    scale = jnp.repeat(scale, 2, axis=-1)[:, :, None, :]  # both dims of a pair, every head
    return (apply_rope(x, positions, base, "interleaved").astype(jnp.float32) * scale).astype(x.dtype)


class XposEncoding(PositionalEncoding):
    def __init__(self, base: float, scale_base: float, gamma: float):
        self.base = base
        self.scale_base = scale_base
        self.gamma = gamma

    def rotate_qk(self, q, k, q_positions, k_positions):
        return (
            apply_xpos(q, q_positions, self.base, self.scale_base, downscale=False, gamma=self.gamma),
            apply_xpos(k, k_positions, self.base, self.scale_base, downscale=True, gamma=self.gamma),
        )


@dataclasses.dataclass(frozen=True)
class Xpos(EncodingSpec):
    name = "xpos"
    base: float = 10000.0
    scale_base: float = 512.0
    gamma: float = 0.4

    def validate(self, model) -> None:
        super().validate(model)
        Rope(base=self.base).validate(model)  # same constraints: even head_dim, base > 1

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return XposEncoding(self.base, self.scale_base, self.gamma)
