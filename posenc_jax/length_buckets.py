"""Training compute that follows the sampled lengths: length buckets (`train.length_buckets`).

Training lengths are uniform on [task.train_min_len, task.train_max_len]. Padded to
train_max_len, a step on lengths 1-40 spends about half its compute on padding. With
`train.length_buckets=K`, the range is cut into K contiguous ranges with (nearly) equal numbers
of lengths (`training_buckets`). Each step trains on one bucket: its lengths are uniform on the
bucket's range, and its batch is padded only to the bucket's longest length. Bucket k is drawn
with probability proportional to its number of lengths (`bucket_of_step`), so over the steps
every length is exactly as likely as without buckets; what changes is the mix within one step.

    lengths 1..40, K = 4:  [1..10] [11..20] [21..30] [31..40], each drawn with probability 1/4;
    a step on [11..20] is padded to 20, not 40.

Which bucket step t trains on depends on t alone (a fixed key, the same for every seed): the
replicas of a vmapped run then all take the same branch of one `lax.switch`, which stays a
branch instead of becoming a select that computes every shape. The examples inside a step are
drawn from the run's own (seed, step), so a run stays a pure function of (settings, seed), and a
chunk of steps compiles once, holding K branches (compile time grows about K-fold).

K = 1 (the default) is one bucket, the whole range: every step is padded to train_max_len, and
the data are those of a run without buckets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from posenc_jax.config import Settings

# The key of the bucket schedule: fixed, so that it is the same for every seed (see above).
_SCHEDULE_KEY = 0x62756B74


class LengthBucket(NamedTuple):
    """Input lengths min_len..max_len (inclusive), drawn uniformly; padded to max_len."""

    min_len: int
    max_len: int

    @property
    def num_lengths(self) -> int:
        return self.max_len - self.min_len + 1


def training_buckets(min_len: int, max_len: int, count: int) -> list[LengthBucket]:
    """[min_len, max_len] cut into `count` contiguous buckets, shortest first, whose numbers of
    lengths differ by at most one (the longer buckets get the extra lengths, which keeps the
    short ones, where padding would cost most in proportion, narrow).

    Raises ValueError unless 1 <= count <= the number of lengths."""
    total = max_len - min_len + 1
    if not 1 <= count <= total:
        raise ValueError(f"cannot cut {total} lengths ({min_len}..{max_len}) into {count} buckets")
    narrow, extra = divmod(total, count)
    buckets, start = [], min_len
    for index in range(count):
        size = narrow + (index >= count - extra)
        buckets.append(LengthBucket(start, start + size - 1))
        start += size
    return buckets


def run_buckets(settings: Settings) -> list[LengthBucket]:
    """The training buckets of a run: task.train_min_len..train_max_len cut into
    train.length_buckets (see `training_buckets`)."""
    task = settings.task
    return training_buckets(task.train_min_len, task.train_max_len, settings.train.length_buckets)


def bucket_of_step(step: jax.Array, buckets: list[LengthBucket]) -> jax.Array:
    """The index of the bucket that training step `step` uses: int32 scalar in [0, len(buckets)),
    drawn with probability proportional to each bucket's number of lengths, from a key that
    depends on the step alone."""
    key = jax.random.fold_in(jax.random.key(_SCHEDULE_KEY), step)
    weights = jnp.array([bucket.num_lengths for bucket in buckets], jnp.float32)
    return jax.random.categorical(key, jnp.log(weights)).astype(jnp.int32)
