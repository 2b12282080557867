"""Loss and accuracy over the scored slots of a batch, shared by training and evaluation.

Everything is returned as per-example *sums* (not means), so that chunks, steps and lengths
can be added up exactly and divided once at the end.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from posenc_jax.tasks import Batch


class Counts(NamedTuple):
    """Per-example sums; each field has shape [batch] (or is summed further by the caller)."""

    nll: jax.Array  # summed negative log-likelihood over scored slots
    correct: jax.Array  # scored slots whose argmax equals the target
    scored: jax.Array  # number of scored slots
    exact: jax.Array  # 1 if every scored slot is correct (whole-sequence exact match)


def count(logits: jax.Array, batch: Batch) -> Counts:
    """logits [B, T, outputs] against batch.targets [B, T] on batch.target_mask."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, batch.targets[..., None], axis=-1)[..., 0]
    mask = batch.target_mask
    hits = (jnp.argmax(logits, axis=-1) == batch.targets) & mask
    correct = hits.sum(axis=1)
    scored = mask.sum(axis=1)
    return Counts(
        nll=jnp.where(mask, nll, 0.0).sum(axis=1),
        correct=correct.astype(jnp.float32),
        scored=scored.astype(jnp.float32),
        exact=(correct == scored).astype(jnp.float32),
    )


def total(counts: Counts) -> Counts:
    """Sum every field over the batch axis."""
    return Counts(*(field.sum(axis=0) for field in counts))
