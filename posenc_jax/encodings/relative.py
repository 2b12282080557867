"""Shared pieces of the learned relative encodings (Shaw, DeBERTa): clipped relative indices,
and moving between "one score per relative position" and "one score per key".

A relative encoding with a table of R rows scores each query against every row once,
[batch, heads, q_len, R], then picks for each key the row of its relative position. That is
cheaper than building a [q_len, k_len, d] tensor of embeddings when R is small, and it is what
the official implementations do (tensor2tensor for Shaw, DeBERTa's gather).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from posenc_jax.encodings.base import relative_positions


def clipped_offsets(q_positions: jax.Array, k_positions: jax.Array, low: int, high: int) -> jax.Array:
    """clip(j − i, low, high) − low: row indices in [0, high − low], [batch, q_len, k_len] int32."""
    return jnp.clip(relative_positions(q_positions, k_positions), low, high) - low


def pick_per_key(scores: jax.Array, rows: jax.Array) -> jax.Array:
    """out[b, h, i, j] = scores[b, h, i, rows[b, i, j]].

    scores [batch, heads, q_len, R], rows [batch, q_len, k_len] int in [0, R) -> [batch, heads,
    q_len, k_len]. Callers clip `rows` into range, so no index is ever clamped silently."""
    return jnp.take_along_axis(scores, rows[:, None], axis=-1)


def sum_per_row(weights: jax.Array, rows: jax.Array, num_rows: int) -> jax.Array:
    """The adjoint of `pick_per_key`: out[b, h, i, r] = Σ_j weights[b, h, i, j] · [rows[b, i, j] = r].

    weights [batch, heads, q_len, k_len] -> [batch, heads, q_len, num_rows]. Written as a masked
    sum over a one-hot comparison, which XLA fuses without materialising it; the work is
    O(batch · heads · q_len · k_len · num_rows), meant for small tables such as Shaw's 2k+1."""
    one_hot = rows[:, None, :, :, None] == jnp.arange(num_rows)
    return jnp.sum(jnp.where(one_hot, weights[..., None], 0.0), axis=3)
