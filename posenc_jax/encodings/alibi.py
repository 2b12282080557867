"""ALiBi: attention with linear biases (Press, Smith & Lewis 2022, "Train Short, Test Long").

No position is added to the embeddings; each head h adds a fixed, distance-proportional penalty
to its attention logits:

    decoder (causal):  bias[h, i, j] = m_h · (j − i)     (j <= i, so the bias is <= 0)
    encoder:           bias[h, i, j] = −m_h · |i − j|    (symmetric, for bidirectional use)

The slopes form a geometric sequence, exactly as in the authors' code: for n heads, a power of 2,
m_h = 2^(−8h/n), h = 1..n (8 heads: 1/2, 1/4, ..., 1/256). Otherwise take the slopes of the
largest power of two p < n, then every other slope of 2p heads (1st, 3rd, ...) for the
remaining n − p heads. Example, 6 heads: [1/4, 1/16, 1/64, 1/256, 1/2, 1/8].

Shapes: positions [batch, seq] -> bias [batch, heads, q_len, k_len].
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding, relative_positions


def alibi_slopes(num_heads: int) -> np.ndarray:
    """The per-head slopes m_h: [num_heads] float32 (see the module docstring)."""
    if num_heads < 1:
        raise ValueError(f"num_heads={num_heads} must be at least 1")
    if num_heads & (num_heads - 1) == 0:  # a power of two
        return np.array(
            [2.0 ** (-8.0 * h / num_heads) for h in range(1, num_heads + 1)], np.float32
        )
    lower = 2 ** math.floor(math.log2(num_heads))
    extra = alibi_slopes(2 * lower)[0::2][: num_heads - lower]
    return np.concatenate([alibi_slopes(lower), extra])


class AlibiBias(PositionalEncoding):
    def __init__(self, num_heads: int, causal: bool):
        self.num_heads = num_heads  # slopes are constants, derived at trace time, not parameters
        self.causal = causal

    def logit_bias(self, q_positions: jax.Array, k_positions: jax.Array, layer: int) -> jax.Array:
        offset = relative_positions(q_positions, k_positions).astype(jnp.float32)  # j − i
        distance = offset if self.causal else -jnp.abs(offset)
        slopes = jnp.asarray(alibi_slopes(self.num_heads))
        return slopes[None, :, None, None] * distance[:, None, :, :]


@dataclasses.dataclass(frozen=True)
class Alibi(EncodingSpec):
    name = "alibi"
    adds_logit_bias = True

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return AlibiBias(model.num_heads, model.causal)
