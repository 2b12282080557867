"""Relative position representations (Shaw, Uszkoreit & Vaswani 2018, "Self-Attention with
Relative Position Representations", §3), as in tensor2tensor's
`dot_product_attention_relative`.

Each attention layer learns key and value embeddings a^K, a^V of the clipped relative position
of key j with respect to query i, shared by all heads:

    r_ij    = clip(j − i, −k, k)                      (2k+1 distinct relative positions)
    e_ij    = q_i · (k_j + a^K[r_ij]) / sqrt(d)       d = head_dim
    z_i     = Σ_j softmax_j(e_ij) · (v_j + a^V[r_ij])

Tables: a^K, a^V [num_layers, 2k+1, head_dim], initialised like tensor2tensor's variables
(uniform unit scaling, fan_avg). Relative positions past ±k share the edge embeddings, so any
length is representable. k = 16 as in the paper's experiments (tensor2tensor's
transformer_relative uses 20). `values=false` keeps only the key embeddings.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding
from posenc_jax.encodings.relative import clipped_offsets, pick_per_key, sum_per_row
from posenc_jax.errors import require_at_least


class ShawEncoding(PositionalEncoding):
    def __init__(
        self, num_layers: int, head_dim: int, max_distance: int, values: bool, rngs: nnx.Rngs
    ):
        self.max_distance = max_distance
        shape = (num_layers, 2 * max_distance + 1, head_dim)
        init = jax.nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", batch_axis=(0,))
        self.key_table = nnx.Param(init(rngs.params(), shape))
        self.value_table = nnx.Param(init(rngs.params(), shape)) if values else None

    def _rows(self, q_positions, k_positions):
        return clipped_offsets(q_positions, k_positions, -self.max_distance, self.max_distance)

    def attention_logits(self, q, k, context, features, layer):
        content = jnp.einsum("bqhd,bkhd->bhqk", q, k)
        per_row = jnp.einsum("bqhd,rd->bhqr", q, self.key_table[layer])
        position = pick_per_key(per_row, self._rows(context.q_positions, context.k_positions))
        return (content + position) / jnp.sqrt(q.shape[-1]).astype(q.dtype)

    def attention_output(self, weights, v, q_positions, k_positions, layer):
        mixed = super().attention_output(weights, v, q_positions, k_positions, layer)
        if self.value_table is None:
            return mixed
        table = self.value_table[layer]
        per_row = sum_per_row(weights, self._rows(q_positions, k_positions), table.shape[0])
        return mixed + jnp.einsum("bhqr,rd->bqhd", per_row, table)


@dataclasses.dataclass(frozen=True)
class Shaw(EncodingSpec):
    name = "shaw"
    max_distance: int = 16  # k in the paper
    values: bool = True

    def validate(self, model) -> None:
        super().validate(model)
        require_at_least("encoding.max_distance", self.max_distance, 1)

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return ShawEncoding(model.num_layers, model.head_dim, self.max_distance, self.values, rngs)
