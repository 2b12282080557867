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


def clipped_offsets(
    q_positions: jax.Array, k_positions: jax.Array, low: int, high: int
) -> jax.Array:
    """clip(j − i, low, high) − low: row indices in [0, high − low], [batch, q_len, k_len] int32."""
    return jnp.clip(relative_positions(q_positions, k_positions), low, high) - low


def pick_per_key(scores: jax.Array, rows: jax.Array) -> jax.Array:
    """out[b, h, i, j] = scores[b, h, i, rows[b, i, j]].

    scores [batch, heads, q_len, R], rows [batch, q_len, k_len] int -> [batch, heads, q_len,
    k_len]. A row outside [0, R) gives NaN: never a clamped or wrapped-around row."""
    inside = (rows >= 0) & (rows < scores.shape[-1])
    picked = _gather_rows(scores, jnp.where(inside, rows, 0))
    return jnp.where(inside[:, None], picked, jnp.nan)


def sum_per_row(weights: jax.Array, rows: jax.Array, num_rows: int) -> jax.Array:
    """The adjoint of `pick_per_key`:
    out[b, h, i, r] = Σ_j weights[b, h, i, j] · [rows[b, i, j] = r].

    weights [batch, heads, q_len, k_len], rows in [0, num_rows) -> [batch, heads, q_len,
    num_rows]. Gathering rows is linear in the scores, and this is exactly its transpose (a
    scatter-add), which JAX derives; on CPU it is ~10x faster than summing against a one-hot
    comparison."""
    rows_shape = jax.ShapeDtypeStruct(weights.shape[:-1] + (num_rows,), weights.dtype)
    (summed,) = jax.linear_transpose(lambda scores: _gather_rows(scores, rows), rows_shape)(weights)
    return summed


def _gather_rows(scores: jax.Array, rows: jax.Array) -> jax.Array:
    return jnp.take_along_axis(scores, rows[:, None], axis=-1)
