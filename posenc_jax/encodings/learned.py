"""Learned absolute positions: a trainable table of `table_size` rows added to the token embeddings
(as in BERT and GPT-2; Gehring et al. 2017 for convolutional seq2seq).

    x[b, t] += table[positions[b, t]],   table: [table_size, d_model]

A position >= table_size has no row. JAX clamps out-of-range gathers by default, which would
silently reuse the last row; here the gather fills NaN instead, so a misuse poisons the output
visibly, and evaluation reports such lengths as not representable before running them.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding, require_table_size
from posenc_jax.errors import ConfigError, require_finite_at_least


class LearnedEncoding(PositionalEncoding):
    def __init__(self, table_size: int, d_model: int, init_std: float, rngs: nnx.Rngs):
        init = jax.nn.initializers.normal(stddev=init_std)
        self.table = nnx.Param(init(rngs.params(), (table_size, d_model)))

    def embed(self, x: jax.Array, positions: jax.Array) -> jax.Array:
        rows = jnp.take(self.table[...], positions, axis=0, mode="fill", fill_value=jnp.nan)
        return x + rows.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class Learned(EncodingSpec):
    name = "learned"
    family = "absolute"
    table_size: int = 512  # BERT's table size
    init_std: float = 0.02  # BERT/GPT-2 initialisation

    @property
    def num_positions(self) -> int:
        return self.table_size if not self.randomized else min(self.table_size, self.max_position)

    def validate(self, model) -> None:
        super().validate(model)
        require_table_size(self.table_size)
        require_finite_at_least("encoding.init_std", self.init_std, 0.0)
        if self.randomized and self.table_size < self.max_position:
            raise ConfigError(
                f"encoding.randomized=true draws positions up to encoding.max_position-1="
                f"{self.max_position - 1}, but the learned table has only encoding.table_size="
                f"{self.table_size} rows. Set encoding.table_size={self.max_position} (or lower "
                f"encoding.max_position)."
            )

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return LearnedEncoding(self.table_size, model.d_model, self.init_std, rngs)
