"""T5 relative position bias (Raffel et al. 2020, §2.1), one table shared by all layers.

Each head learns one scalar per *bucket* of the relative position r = j − i (key minus query):

    bias[h, i, j] = table[bucket(j − i), h],   table: [num_buckets, heads]

bucket(r), exactly as in T5's reference code (Mesh TensorFlow / flaxformer):
- n = −r. Bidirectional (encoder): half of the buckets for each sign, bucket += num_buckets/2
  when r > 0, then n = |n|. One-sided (decoder): n = max(n, 0), so every future key falls into
  bucket 0 (the causal mask hides those anyway).
- The first max_exact = buckets/2 distances get a bucket each (n < max_exact -> n).
- Larger distances share logarithmically wider buckets:
      max_exact + floor(log(n / max_exact + eps) / log(max_distance / max_exact)
                        · (buckets − max_exact))
  capped at buckets − 1, with eps = float32 machine epsilon as in the reference.

Example (bidirectional, 32 buckets, max_distance 128): r = 0 -> 0, r = −7 -> 7, r = −16 -> 10,
r = −200 -> 15, r = +1 -> 17, r = +200 -> 31.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding, relative_positions
from posenc_jax.errors import ConfigError, require_finite_at_least


def t5_relative_bucket(
    relative_position, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
) -> jax.Array:
    """Bucket ids in [0, num_buckets) for relative positions (key − query), int32, same shape."""
    n = -jnp.asarray(relative_position, jnp.int32)
    bucket = jnp.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (n < 0).astype(jnp.int32) * num_buckets
        n = jnp.abs(n)
    else:
        n = jnp.maximum(n, 0)
    max_exact = num_buckets // 2
    # max(n, 1) keeps log finite where n = 0; those entries take the exact branch anyway.
    scaled = jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact + np.finfo(np.float32).eps)
    scaled = scaled / np.log(max_distance / max_exact) * (num_buckets - max_exact)
    if_large = jnp.minimum(max_exact + scaled.astype(jnp.int32), num_buckets - 1)
    return bucket + jnp.where(n < max_exact, n, if_large)


class T5Bias(PositionalEncoding):
    def __init__(
        self,
        num_heads: int,
        causal: bool,
        num_buckets: int,
        max_distance: int,
        init_std: float,
        rngs: nnx.Rngs,
    ):
        self.bidirectional = not causal
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        init = jax.nn.initializers.normal(stddev=init_std)
        self.table = nnx.Param(init(rngs.params(), (num_buckets, num_heads)))

    def logit_bias(self, q_positions: jax.Array, k_positions: jax.Array, layer: int) -> jax.Array:
        relative = relative_positions(q_positions, k_positions)
        buckets = t5_relative_bucket(
            relative, self.bidirectional, self.num_buckets, self.max_distance
        )
        return jnp.moveaxis(self.table[...][buckets], -1, 1)  # [batch, heads, q, k]


@dataclasses.dataclass(frozen=True)
class T5(EncodingSpec):
    name = "t5"
    adds_logit_bias = True
    num_buckets: int = 32
    max_distance: int = 128
    init_std: float = 0.02

    def validate(self, model) -> None:
        super().validate(model)
        require_finite_at_least("encoding.init_std", self.init_std, 0.0)
        if self.num_buckets < 4 or self.num_buckets % 4:
            raise ConfigError(
                f"encoding.num_buckets={self.num_buckets} must be a positive multiple of 4 "
                f"(half per direction, half of those exact), e.g. 32 as in T5."
            )
        exact = self.num_buckets // 4 if not model.causal else self.num_buckets // 2
        if self.max_distance <= exact:
            raise ConfigError(
                f"encoding.max_distance={self.max_distance} must exceed the {exact} exact buckets."
            )

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return T5Bias(
            model.num_heads, model.causal, self.num_buckets, self.max_distance, self.init_std, rngs
        )
