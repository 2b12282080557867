"""Randomized positions (Ruoss et al. 2023, "Randomized Positional Encodings Boost Length
Generalization of Transformers", §3).

Instead of 0, 1, …, T−1, each example's slots get a sorted sample of distinct positions drawn
uniformly from [0, max_position), so during training the encoding already meets the large
positions that long test sequences need. Order is kept (the sample is sorted); gaps are random.

    positions [batch, T] (slot indices, 0 on padding) -> sorted_sample[b, positions[b, t]]

Training draws a new sample for every example of every step. Evaluation draws them the same
way from a fixed key (derived from eval.seed and the length), so re-running an evaluation
gives the same positions and the same numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from posenc_jax.encodings import EncodingSpec
from posenc_jax.tasks.base import Batch


def random_positions(
    key: jax.Array, positions: jax.Array, token_mask: jax.Array, max_position: int
) -> jax.Array:
    """Replace slot indices by sorted distinct draws from [0, max_position): [batch, T] int32.

    Every real slot index must be < max_position (the settings validation guarantees it for
    every length that is run); padding slots stay 0."""
    batch, length = positions.shape
    # A padded batch may have more slots than max_position; only real slots read the sample.
    count = min(length, max_position)

    def draw(k):
        return jnp.sort(jax.random.choice(k, max_position, (count,), replace=False))

    sample = jax.vmap(draw)(jax.random.split(key, batch)).astype(jnp.int32)
    drawn = jnp.take_along_axis(sample, jnp.where(token_mask, positions, 0), axis=1)
    return jnp.where(token_mask, drawn, 0)


def position_scheme(encoding: EncodingSpec, key: jax.Array, batch: Batch) -> Batch:
    """The batch with the positions `encoding` is trained and evaluated on.

    `key` is the batch's own key; the positions use fold_in(key, 1), so turning randomization on
    leaves the examples themselves unchanged."""
    if not encoding.randomized:
        return batch
    key = jax.random.fold_in(key, 1)
    return batch._replace(
        positions=random_positions(key, batch.positions, batch.token_mask, encoding.max_position)
    )
