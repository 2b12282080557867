"""Disentangled attention (He, Liu, Gao & Chen 2021, "DeBERTa: Decoding-enhanced BERT with
Disentangled Attention", §3.1, Eq. 4), as in the official DeBERTa (v1) code.

Positions live in one relative embedding table P [2k, d_model] shared by all layers; each layer
projects it into position keys and queries, K^r = P W_{k,r} and Q^r = P W_{q,r} + b_{q,r}.
With content queries and keys Q^c, K^c, the logit of query i for key j is

    A_ij = ( Q^c_i·K^c_j  +  Q^c_i·K^r[δ(i,j)]  +  K^c_j·Q^r[δ(i,j)] ) / sqrt(3d)
            content→content  content→position       position→content

    δ(i,j) = clip(i − j, −k, k − 1) + k ∈ [0, 2k),      d = head_dim.

The scale is 1/sqrt(d · (1 + number of position terms)): 1/sqrt(3d) with both on (`c2p`,
`p2c`). Note on δ in the position→content term: the paper writes δ(j, i), but the official
implementation (and Hugging Face's port) gathers with clamp(−r + k) and then transposes, which
selects row δ(i, j), the same row as content→position. This module follows the code.

Shapes: P [2k, d_model]; W_{k,r}, W_{q,r} [num_layers, d_model, heads, head_dim]; b_{q,r}
[num_layers, heads, head_dim]; all initialised N(0, 0.02²) (biases 0) like DeBERTa's weights.
k = 512, the paper's value (max_relative_positions = max_position_embeddings = 512).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding, relative_positions
from posenc_jax.encodings.relative import pick_per_key
from posenc_jax.errors import ConfigError, require_at_least


class DisentangledAttention(PositionalEncoding):
    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        max_distance: int,
        content_to_position: bool,
        position_to_content: bool,
        position_limit: int | None,
        rngs: nnx.Rngs,
    ):
        self.max_distance = max_distance
        self.position_limit = position_limit
        self.content_to_position = content_to_position
        self.position_to_content = position_to_content
        init = jax.nn.initializers.normal(stddev=0.02)
        head_dim = d_model // num_heads
        projection = (num_layers, d_model, num_heads, head_dim)
        self.table = nnx.Param(init(rngs.params(), (2 * max_distance, d_model)))
        self.key_projection = nnx.Param(init(rngs.params(), projection))
        self.query_projection = nnx.Param(init(rngs.params(), projection))
        self.query_bias = nnx.Param(jnp.zeros((num_layers, num_heads, head_dim)))

    def attention_logits(self, q, k, context, features, layer):
        k_max = self.max_distance
        # Only the rows of distances that can occur are scored, as DeBERTa's own att_span does:
        # positions are slot indices, |i − j| < k_len, unless randomized (< max_position). A
        # distance outside the span would pick a missing row and give NaN, never a wrong one.
        span = min(k_max, self.position_limit or k.shape[1])
        table = self.table[k_max - span : k_max + span]
        # δ(i, j) = clip(i − j, −k, k − 1) + k, counted from the first kept row;
        # relative_positions gives j − i.
        distance = -relative_positions(context.q_positions, context.k_positions)
        rows = jnp.clip(distance, -k_max, k_max - 1) + span
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
        if self.content_to_position:
            position_keys = jnp.einsum("rm,mhd->rhd", table, self.key_projection[layer])
            logits += pick_per_key(jnp.einsum("bqhd,rhd->bhqr", q, position_keys), rows)
        if self.position_to_content:
            position_queries = (
                jnp.einsum("rm,mhd->rhd", table, self.query_projection[layer])
                + self.query_bias[layer]
            )
            # Score every key against every position query, then pick, for key j and query i,
            # the row δ(i, j): the same gather with the roles of the two axes swapped.
            per_row = jnp.einsum("bkhd,rhd->bhkr", k, position_queries)
            logits += jnp.swapaxes(pick_per_key(per_row, jnp.swapaxes(rows, 1, 2)), 2, 3)
        terms = 1 + self.content_to_position + self.position_to_content
        return logits / jnp.sqrt(terms * q.shape[-1]).astype(q.dtype)


@dataclasses.dataclass(frozen=True)
class Deberta(EncodingSpec):
    name = "deberta"
    max_distance: int = 512  # k: the paper's maximum relative distance
    c2p: bool = True  # content→position term
    p2c: bool = True  # position→content term

    def validate(self, model) -> None:
        super().validate(model)
        require_at_least("encoding.max_distance", self.max_distance, 1)
        if not (self.c2p or self.p2c):
            raise ConfigError(
                "encoding.c2p and encoding.p2c are both false, which leaves DeBERTa without any "
                "position information; enable at least one (the paper uses both)."
            )

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return DisentangledAttention(
            model.num_layers,
            model.d_model,
            model.num_heads,
            self.max_distance,
            self.c2p,
            self.p2c,
            self.num_positions,
            rngs,
        )
