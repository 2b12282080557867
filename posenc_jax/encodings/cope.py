"""CoPE, contextual position encoding (Golovneva, Wang, Weston & Sukhbaatar 2024, "Contextual
Position Encoding: Learning to Count What's Important", §3), as in the official code
(facebookresearch/RAM, projects/cope/src/cope/context_position.py).

Positions are not token indices but counts of the keys that a gate lets through. For query i
and key j (masked keys have gate 0):

    g_ik = sigmoid(q_i·k_k / sqrt(d))                      gates, d = head_dim
    p_ij = min(Σ_{k ≥ j} g_ik, max_count)                  contextual position of j seen from i
    e[p] = q_i · E[:, p],  E [head_dim, max_count + 1]      one logit per integer position
    z_ij = e[⌈p_ij⌉] (p_ij − ⌊p_ij⌋) + e[⌊p_ij⌋] (1 − p_ij + ⌊p_ij⌋)   (interpolated)
    A_ij = (q_i·k_j + z_ij) / sqrt(d)

In a decoder the causal mask makes the sum run over j ≤ k ≤ i, as in the paper. The paper only
uses decoders; in encoder mode this module applies the official formula as it stands, so a
key's count runs to the end of the sequence (its position counted from the end).

E is per layer, shared by the heads, initialised to zeros as in the official code:
[num_layers, head_dim, max_count + 1]. Counts past max_count are clamped to it by design (the
official `--cope-npos` = block size + 1; 512 + 1 in its run script). CoPE reads no position ids,
so shifting them changes nothing and randomized positions do not apply.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import EncodingSpec, PositionalEncoding
from posenc_jax.errors import require_at_least


class ContextualPositions(PositionalEncoding):
    def __init__(self, num_layers: int, head_dim: int, max_count: int):
        self.max_count = max_count
        self.table = nnx.Param(jnp.zeros((num_layers, head_dim, max_count + 1)))

    def attention_logits(self, q, k, context, features, layer):
        scale = jnp.sqrt(q.shape[-1]).astype(q.dtype)
        content = jnp.einsum("bqhd,bkhd->bhqk", q, k)
        gates = jax.nn.sigmoid(content / scale) * context.mask
        counts = jnp.minimum(jnp.cumsum(gates[..., ::-1], axis=-1)[..., ::-1], self.max_count)
        # A count never exceeds the number of keys, so rows past k_len can never be selected.
        rows = min(self.max_count + 1, k.shape[1] + 1)
        per_count = jnp.einsum("bqhd,dp->bhqp", q, self.table[layer][:, :rows])
        below = jnp.floor(counts)
        above_weight = counts - below

        def pick(index):
            return jnp.take_along_axis(per_count, index.astype(jnp.int32), axis=-1)

        interpolated = pick(jnp.ceil(counts)) * above_weight + pick(below) * (1 - above_weight)
        return (content + interpolated) / scale


@dataclasses.dataclass(frozen=True)
class Cope(EncodingSpec):
    name = "cope"
    family = "contextual"
    max_count: int = 512  # counts are clamped here; the official npos = 512 + 1

    def validate(self, model) -> None:
        super().validate(model)
        require_at_least("encoding.max_count", self.max_count, 1)

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return ContextualPositions(model.num_layers, model.head_dim, self.max_count)
