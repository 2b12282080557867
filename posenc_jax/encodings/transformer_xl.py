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

which is exact and costs one [q_len, k_len] product of width D per head. The expansion is only
as good as sin and cos of the single angles, which are far larger than a nearby pair's
distance: with randomized positions spread over [0, 2048), float32 angles a_f lose ~1e-4 and
the logits 6e-4 against the official code, which builds R from the distance directly. So the
angles are never rounded: sin/cos(p·ω) are angle sums over the base-256 digits of p, from
tables computed in float64 (`position_sinusoids`), accurate to a few float32 ulps for every
position the settings accept (< 2^24).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from posenc_jax.encodings.base import (
    EncodingSpec,
    PositionalEncoding,
    first_position,
    require_frequency_base,
)
from posenc_jax.errors import ConfigError

DIGIT_BITS = 8  # |p| = Σ_k d_k·2^(8k): three tables of 256 rows cover every |p| < 2^24
DIGITS = 3


def position_sinusoids(offsets: jax.Array, frequencies: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """sin(p·ω_f) and cos(p·ω_f) for int offsets |p| < 2^24: [..., F] each, float32.

    The angle p·ω is never rounded to float32. |p| is split into base-256 digits d_k, and
    sin/cos of |p|·ω are the angle sums of tables of sin/cos(d·256^k·ω) computed in float64, so
    they are accurate to a few float32 ulps however large p is; a negative p flips the sine.
    Offsets of 2^24 or more, which no accepted setting produces, give NaN rather than a wrapped
    angle. frequencies: ω [F] (float64)."""
    magnitude = jnp.abs(offsets)
    sin = cos = None
    for k in range(DIGITS):
        angles = (np.arange(2**DIGIT_BITS) * 2 ** (DIGIT_BITS * k))[:, None] * frequencies
        digit = (magnitude >> (DIGIT_BITS * k)) & (2**DIGIT_BITS - 1)
        digit_sin = jnp.asarray(np.sin(angles), jnp.float32)[digit]
        digit_cos = jnp.asarray(np.cos(angles), jnp.float32)[digit]
        if sin is None or cos is None:
            sin, cos = digit_sin, digit_cos
        else:
            sin, cos = sin * digit_cos + cos * digit_sin, cos * digit_cos - sin * digit_sin
    assert sin is not None and cos is not None
    in_range = (magnitude < 2 ** (DIGIT_BITS * DIGITS))[..., None]
    sin = jnp.where(in_range, jnp.where(offsets[..., None] < 0, -sin, sin), jnp.nan)
    return sin, jnp.where(in_range, cos, jnp.nan)


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

    def attention_logits(self, q, k, context, features, layer):
        content = jnp.einsum("bqhd,bkhd->bhqk", q + self.content_bias[...], k)
        projected = jnp.einsum(
            "bqhd,mhd->bqhm", q + self.position_bias[...], self.position_projection[layer]
        )
        sine_part, cosine_part = jnp.split(projected.astype(jnp.float32), 2, axis=-1)
        # Positions from the example's first one: i − j is unchanged, and shifting every
        # position changes nothing at all.
        anchor = first_position(context.k_positions)
        # ω_f = base^(−2f/D), f = 0 .. D/2 − 1, in float64 for the tables.
        frequencies = self.base ** -(np.arange(0, projected.shape[-1], 2) / projected.shape[-1])

        def sinusoids(positions):
            return position_sinusoids(positions - anchor, frequencies)

        sin_a, cos_a = (part[:, :, None, :] for part in sinusoids(context.q_positions))
        sin_b, cos_b = sinusoids(context.k_positions)
        query_features = jnp.concatenate(
            [sine_part * sin_a + cosine_part * cos_a, cosine_part * sin_a - sine_part * cos_a],
            axis=-1,
        )
        key_features = jnp.concatenate([cos_b, sin_b], axis=-1)
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
        require_frequency_base(self.base)

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return RelativeSinusoidAttention(
            model.num_layers, model.d_model, model.num_heads, self.base, rngs
        )
