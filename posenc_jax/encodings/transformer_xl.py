"""Transformer-XL relative attention (Dai et al. 2019, "Transformer-XL: Attentive Language
Models Beyond a Fixed-Length Context", §3.3), as in the official `RelPartialLearnableMultiHeadAttn`
(kimiyoung/transformer-xl, PyTorch), without the segment memory.

With content projections q_i = W_q x_i, k_j = W_{k,E} x_j, a sinusoidal embedding R of the
relative distance i − j, a per-layer projection W_{k,R} and two learned vectors u, v per head:

    A_ij = [ (q_i + u)·k_j  +  (q_i + v)·(W_{k,R} R[i − j]) ] / sqrt(d)      d = head_dim
    R[δ] = [sin(δ·ω_0), …, sin(δ·ω_{D/2−1}), cos(δ·ω_0), …, cos(δ·ω_{D/2−1})],  ω_f = 10000^(−2f/D)

(terms (a)+(c) and (b)+(d) of the paper), D = d_model. u and v are shared by all layers
(the official default, untie_r=False); W_{k,R} [num_layers, D, heads, d] is per layer; all are
initialised N(0, 0.02²) as in the official code. In encoder mode, i − j is negative for keys to
the right, which the sinusoid represents as it is.

Computation: rather than materialising R[i − j] for every pair ([q_len, k_len, D] per example),
the (b)+(d) term is expanded with sin(a − b) and cos(a − b) into a product of a per-query and a
per-key feature. With c_i = W_{k,R}ᵀ(q_i + v) split into its sine half s and cosine half c:

    c_i · R[p_i − p_j] = Σ_f (s_f sin a_f + c_f cos a_f) cos b_f
                       + (c_f sin a_f − s_f cos a_f) sin b_f
    with a_f = (p_i − p_0) ω_f, b_f = (p_j − p_0) ω_f, p_0 the example's first position

which is exact and costs one [q_len, k_len] product of width D per head.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding, first_position
from posenc_jax.encodings.rope_scaling import rope_frequencies
from posenc_jax.errors import ConfigError


class RelativeSinusoidAttention(PositionalEncoding):
    def __init__(self, num_layers: int, d_model: int, num_heads: int, base: float, rngs: nnx.Rngs):
        self.base = base
        init = jax.nn.initializers.normal(stddev=0.02)
        head_dim = d_model // num_heads
        self.content_bias = nnx.Param(init(rngs.params(), (num_heads, head_dim)))  # u
        self.position_bias = nnx.Param(init(rngs.params(), (num_heads, head_dim)))  # v
        self.position_projection = nnx.Param(
            init(rngs.params(), (num_layers, d_model, num_heads, head_dim))
        )

    def attention_logits(self, q, k, q_positions, k_positions, mask, layer):
        content = jnp.einsum("bqhd,bkhd->bhqk", q + self.content_bias[...], k)
        projected = jnp.einsum(
            "bqhd,mhd->bqhm", q + self.position_bias[...], self.position_projection[layer]
        )
        sine_part, cosine_part = jnp.split(projected.astype(jnp.float32), 2, axis=-1)
        frequencies = rope_frequencies(projected.shape[-1], self.base)
        # Angles of positions from the first one: i − j is unchanged, and the float32 angles
        # stay as small as the example's span (absolute positions lost 6e-4 at 2048).
        anchor = first_position(k_positions)
        q_angles = ((q_positions - anchor)[..., None].astype(jnp.float32) * frequencies)[
            :, :, None, :
        ]
        k_angles = (k_positions - anchor)[..., None].astype(jnp.float32) * frequencies
        sin_a, cos_a = jnp.sin(q_angles), jnp.cos(q_angles)
        query_features = jnp.concatenate(
            [sine_part * sin_a + cosine_part * cos_a, cosine_part * sin_a - sine_part * cos_a],
            axis=-1,
        )
        key_features = jnp.concatenate([jnp.cos(k_angles), jnp.sin(k_angles)], axis=-1)
        position = jnp.einsum("bqhm,bkm->bhqk", query_features, key_features).astype(q.dtype)
        return (content + position) / jnp.sqrt(q.shape[-1]).astype(q.dtype)


@dataclasses.dataclass(frozen=True)
class TransformerXL(EncodingSpec):
    name = "transformer_xl"
    base: float = 10000.0  # wavelength base of the sinusoid R

    def validate(self, model) -> None:
        super().validate(model)
        if model.d_model % 2:
            raise ConfigError(
                f"Transformer-XL's sinusoid R has a sine and a cosine half, so model.d_model "
                f"must be even; got {model.d_model}."
            )
        if not self.base > 1:
            raise ConfigError(f"encoding.base={self.base} must be greater than 1.")

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return RelativeSinusoidAttention(
            model.num_layers, model.d_model, model.num_heads, self.base, rngs
        )
