"""Stick-breaking attention (Tan, Yang, Panda, Wang, Shen, Courville & Ren 2025, "Scaling
Stick-Breaking Attention: An Efficient Implementation and In-depth Study", ICLR), as in the
official code (shawntan/stickbreaking-attention: the reference `sb_ref.py`, the kernel's
defaults, and the layer of its `sb_dolomite` model).

The softmax is replaced. Each key j before query i claims a share β_ij = σ(z_ij) of what the
keys between them have left, the nearest key first:

    z_ij = q_i·k_j / sqrt(d)
    A_ij = β_ij · Π_{j<k<i} (1 − β_ik)         for keys j < i (the official attend_current=False)
    o_i  = Σ_{j<i} A_ij v_j + (1 − Σ_{j<i} A_ij) v_i

The remainder 1 − Σ A_ij goes to the query's own value, as the official layer adds
`rem[..., None] * v` (its `sb_remainder` is on by default). Here that remainder is the weight
of the diagonal, so the weights of a row sum to 1 and the model's value mixing is unchanged.
In log space, as the reference: log A_ij = log σ(z_ij) + Σ_{j<k<i} log σ(−z_ik). No position
encoding is used: the order of the keys, nearest first, is the position signal.

Stick-breaking is causal by definition (every kernel masks causally; the product runs over the
keys between key and query): an encoder is refused. It reads no position ids and keeps no
parameters.

Worked example, query 2 with logits z_20 = z_21 = 0: β = 1/2 each, A_21 = 1/2, A_20 = 1/4, and
the remainder 1/4 goes to v_2.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from posenc_jax.encodings.base import Context, EncodingSpec, PositionalEncoding


def stick_breaking_weights(logits: jax.Array, visible: jax.Array) -> jax.Array:
    """A_ij for the keys a query may attend to, `visible` [.., q_len, k_len] bool (keys strictly
    before the query, in slot order), from logits [.., q_len, k_len] -> [.., q_len, k_len]
    float32, 0 where not visible. Rows sum to at most 1."""
    z = logits.astype(jnp.float32)
    log_claim = jnp.where(visible, jax.nn.log_sigmoid(z), 0.0)
    log_left = jnp.where(visible, jax.nn.log_sigmoid(-z), 0.0)
    # Σ over the visible keys after j (nearer the query): a reverse cumulative sum, exclusive.
    after = jnp.cumsum(log_left[..., ::-1], axis=-1)[..., ::-1] - log_left
    return jnp.where(visible, jnp.exp(log_claim + after), 0.0)


class StickBreakingAttention(PositionalEncoding):
    def normalise(self, logits, context: Context, layer):
        key_slots = jnp.arange(logits.shape[-1])
        query_slots = context.q_slots[:, None, :, None]  # [batch or 1, 1, q_len, 1]
        before = context.mask & (key_slots < query_slots)
        weights = stick_breaking_weights(logits, before)
        remainder = 1.0 - weights.sum(axis=-1, keepdims=True)
        return weights + remainder * (key_slots == query_slots)


@dataclasses.dataclass(frozen=True)
class StickBreaking(EncodingSpec):
    name = "stick_breaking"
    family = "contextual"
    decoder_only_because = (
        "each key's weight is what the keys between it and the query leave over, which needs "
        "an order from the query back to the first key; the official kernels are causal only."
    )

    def build(self, model, rngs: nnx.Rngs) -> PositionalEncoding:
        return StickBreakingAttention()
