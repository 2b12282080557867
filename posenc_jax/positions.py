"""Randomized positions (Ruoss et al. 2023, "Randomized Positional Encodings Boost Length
Generalization of Transformers", §3), as their code draws them (google-deepmind/
randomized_positional_encodings, models/positional_encodings.py).

Instead of 0, 1, …, n−1, an example of n slots gets a sorted uniform subset of n distinct
positions from [0, max_position), so during training the encoding already meets the large
positions that long test sequences need. Order is kept (the subset is sorted); gaps are random.

The subset depends only on the example's own key and its own size n, never on the padded width
of its batch: the same example gets the same positions in every evaluation bucket, and a short
training example reaches large positions as often as a long one. Worked example,
max_position = 8, an example of 3 slots: a random permutation of 0..7, say [5, 1, 7, 0, ...],
selects its first 3 values {5, 1, 7}, which sorted give the positions [1, 5, 7].

    positions [batch, T] (slot indices, 0 on padding) -> subset_b[positions[b, t]]

Training draws a new subset for every example of every step. Evaluation draws them the same
way from a fixed key (derived from eval.seed and the length), so re-running an evaluation
gives the same positions and the same numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from posenc_jax.config import Settings
from posenc_jax.encodings.base import DigitPositions
from posenc_jax.tasks.base import Batch, NumberTask


def sorted_subset(key: jax.Array, size: jax.Array, max_position: int, width: int) -> jax.Array:
    """A sorted uniform subset of `size` distinct values from [0, max_position), in the first
    `size` of `width` entries: [width] int32 (entries from `size` on are max_position, filler).

    The first `size` values of a uniform random permutation are a uniform `size`-subset; sorting
    them, with the rest replaced by the filler, puts them first, in order. `size` may be traced;
    only `width` is static, and it only cuts the result, so the subset does not depend on it."""
    permutation = jax.random.permutation(key, max_position)
    first = jnp.arange(max_position) < size
    ascending = jnp.sort(jnp.where(first, permutation, max_position))
    if width > max_position:  # a padded row longer than the range: its extra slots are padding
        ascending = jnp.pad(ascending, (0, width - max_position), constant_values=max_position)
    return ascending[:width].astype(jnp.int32)


def random_positions(
    key: jax.Array, positions: jax.Array, token_mask: jax.Array, max_position: int
) -> jax.Array:
    """Replace slot indices by each example's sorted subset of [0, max_position): [batch, T].

    Example b uses the key fold_in(key, b) and a subset of its own number of real slots. Every
    real slot index must be < max_position (the settings validation guarantees it for every
    length that is run); padding slots stay 0."""
    batch, width = positions.shape
    keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(batch))
    sizes = token_mask.sum(axis=1)
    subsets = jax.vmap(lambda k, n: sorted_subset(k, n, max_position, width))(keys, sizes)
    drawn = jnp.take_along_axis(subsets, jnp.where(token_mask, positions, 0), axis=1)
    return jnp.where(token_mask, drawn, 0)


def position_scheme(settings: Settings, key: jax.Array, batch: Batch, training: bool) -> Batch:
    """The batch with the positions the run's encoding is trained (`training`) and evaluated on:
    slot indices, randomized positions, or ids from the task's digit roles (Abacus, position
    coupling; `DigitPositions.positions_from_roles`).

    `key` is the batch's own key; the positions use fold_in(key, 1), so randomness in the
    positions leaves the examples themselves unchanged."""
    encoding = settings.encoding
    key = jax.random.fold_in(key, 1)
    if isinstance(encoding, DigitPositions):
        task = settings.task
        assert isinstance(task, NumberTask), "the settings refuse a task without digit roles"
        roles = task.digit_roles(batch, settings.model.causal)
        positions = encoding.positions_from_roles(roles, key, training)
        return batch._replace(positions=jnp.where(batch.token_mask, positions, 0))
    if not encoding.randomized:
        return batch
    return batch._replace(
        positions=random_positions(key, batch.positions, batch.token_mask, encoding.max_position)
    )
