"""xPos: RoPE with an exponential decay/extrapolation scale (Sun et al. 2022, "A
Length-Extrapolatable Transformer"), as in the authors' torchscale code.

Each rotated pair i of a query at position n is multiplied by ζ_i^(n/B), and of a key at
position m by ζ_i^(−m/B), so their product carries ζ_i^((n−m)/B): relative, like RoPE, and, since
ζ_i < 1, decaying with distance in a decoder (n >= m). Fast-rotating pairs decay fastest.

    ζ_i = (2i + γ·d) / ((1 + γ)·d),  i = 0 .. d/2-1,  γ = `gamma` = 0.4
    q'_n = RoPE(q, n) ⊙ ζ^(n/B),     k'_m = RoPE(k, m) ⊙ ζ^(−m/B),     B = `scale_base` = 512

Example, d = 4: ζ = [1.6/5.6, 3.6/5.6] = [0.2857, 0.6429]. The rotation uses the interleaved
pairs (2i, 2i+1) of the authors' code. torchscale centres positions before scaling to keep the
numbers small; that shift cancels in q·k, so positions are used as given here.

In an encoder, keys to the right of the query (m > n) are amplified rather than decayed: the
formula is the paper's, which was designed for decoders; it is applied unchanged.

RoPE's context-extension rules (`encoding.scaling`) change the rotation only: the decay stays a
function of the true distance, which is what xPos relies on to extrapolate.

Shapes: x [batch, seq, heads, head_dim]; positions [batch, seq].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.encodings.rope import Rope, pair_values_to_dims


def xpos_zeta(head_dim: int, gamma: float = 0.4) -> jax.Array:
    """ζ_i = (2i + γ·d) / ((1 + γ)·d): [head_dim // 2] float32."""
    return (jnp.arange(0, head_dim, 2, dtype=jnp.float32) + gamma * head_dim) / (
        (1 + gamma) * head_dim
    )


def xpos_scale(
    positions: jax.Array, head_dim: int, scale_base: float, gamma: float, is_query: bool
) -> jax.Array:
    """ζ^(+position/scale_base) for queries, ζ^(−position/scale_base) for keys:
    [batch, seq, head_dim/2]."""
    exponent = positions[..., None].astype(jnp.float32) / scale_base
    return xpos_zeta(head_dim, gamma) ** (exponent if is_query else -exponent)


@dataclasses.dataclass(frozen=True)
class Xpos(Rope):
    name = "xpos"
    scale_base: float = 512.0
    gamma: float = 0.4

    def rotate(self, x: jax.Array, positions: jax.Array, is_query: bool) -> jax.Array:
        scale = xpos_scale(positions, x.shape[-1], self.scale_base, self.gamma, is_query)
        scale = pair_values_to_dims(scale, self.layout)[:, :, None, :]  # every head
        return (super().rotate(x, positions, is_query).astype(jnp.float32) * scale).astype(x.dtype)
