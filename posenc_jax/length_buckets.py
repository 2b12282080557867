"""Training compute that follows the sampled lengths: length buckets (`train.length_buckets`).

Training lengths are uniform on [task.train_min_len, task.train_max_len]. Padded to
train_max_len, a step on lengths 1-40 spends about half its compute on padding. With
`train.length_buckets=K`, the range is cut into K contiguous ranges with (nearly) equal numbers
of lengths, and every step's batch into K groups, one per range (`training_buckets`): group k's
examples have lengths uniform on range k and are padded only to its longest length. Each group
holds a share of train.batch_size proportional to its number of lengths, so a step holds every
length as often, in expectation, as an unbucketed step does (exactly when K divides both the
number of lengths and the batch size; otherwise the shares are rounded, see `training_buckets`).

    lengths 1..40, batch 128, K = 4:  [1..10] [11..20] [21..30] [31..40], 32 examples each,
    padded to 10, 20, 30 and 40 slots instead of 40: 62.5% of the unbucketed step's slots.

The step's loss is the mean over all its scored tokens, as without buckets: the K groups are K
forward passes inside one differentiated function, and the step sees the same mix of lengths
as an unbucketed one (stratified, not a random mix), so the optimiser's dynamics stay those of
the unbucketed run. An earlier design trained each step on one whole bucket, drawn at random;
its steps alternated between all-short and all-long batches, and on the default RoPE `reverse`
run it cost exact match (0.95 ± 0.07 against 1.00 unbucketed, 3 seeds).

Group k's examples are drawn from the step's key folded with k, so a run stays a pure function
of (settings, seed). K = 1 (the default) is one group, the whole range and the whole batch:
every step is padded to train_max_len, and the data are those of a run without buckets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from posenc_jax.config import Settings


# Every group of a step, and every `train.microbatch` slice of one, is a forward-and-backward
# pass that XLA compiles on its own (static shapes: that is what makes them fast), so compile
# time grows with their number. The default job (batch 128) compiles in 2.4 s as one pass,
# 10.4 s as 16, 21.6 s as 32 and 198 s as 128 (2-core CPU); more than 32 is refused.
MAX_PASSES_PER_STEP = 32


class LengthBucket(NamedTuple):
    """`examples` of a step's examples, of lengths min_len..max_len (inclusive, drawn
    uniformly), padded to max_len."""

    min_len: int
    max_len: int
    examples: int

    @property
    def num_lengths(self) -> int:
        return self.max_len - self.min_len + 1


def training_buckets(min_len: int, max_len: int, count: int, batch_size: int) -> list[LengthBucket]:
    """[min_len, max_len] cut into `count` contiguous buckets, shortest first, whose numbers of
    lengths differ by at most one (the longer buckets get the extra lengths, which keeps the
    short ones, where padding would cost most in proportion, narrow), and `batch_size` examples
    shared among them in proportion to their numbers of lengths.

    The shares batch_size × lengths_k / total_lengths are rounded by largest remainder (ties to
    the longer bucket), so they add up to batch_size and each is within one example of its
    exact share: a length is then drawn with probability examples_k / (batch_size × lengths_k)
    per example instead of exactly 1 / total_lengths.

    Raises ValueError unless 1 <= count <= min(the number of lengths, batch_size)."""
    total = max_len - min_len + 1
    if not 1 <= count <= min(total, batch_size):
        raise ValueError(
            f"cannot cut {total} lengths ({min_len}..{max_len}) and {batch_size} examples into "
            f"{count} buckets"
        )
    narrow, extra = divmod(total, count)
    sizes = [narrow + (index >= count - extra) for index in range(count)]
    shares = [divmod(batch_size * size, total) for size in sizes]  # (whole, remainder / total)
    examples = [whole for whole, _ in shares]
    by_remainder = sorted(range(count), key=lambda index: (shares[index][1], index), reverse=True)
    for index in by_remainder[: batch_size - sum(examples)]:
        examples[index] += 1
    buckets, start = [], min_len
    for size, group in zip(sizes, examples, strict=True):
        buckets.append(LengthBucket(start, start + size - 1, group))
        start += size
    return buckets


def run_buckets(settings: Settings) -> list[LengthBucket]:
    """The training buckets of a run: task.train_min_len..train_max_len and train.batch_size cut
    into train.length_buckets (see `training_buckets`)."""
    task, train = settings.task, settings.train
    return training_buckets(
        task.train_min_len, task.train_max_len, train.length_buckets, train.batch_size
    )


def pass_sizes(buckets: list[LengthBucket], microbatch: int | None) -> list[int]:
    """The examples of each forward-and-backward pass of one training step: each bucket's group
    in slices of at most `microbatch` examples (one slice if None), as `train.microbatches` cuts
    them."""
    sizes = []
    for bucket in buckets:
        size = bucket.examples if microbatch is None else microbatch
        whole, rest = divmod(bucket.examples, size)
        sizes += [size] * whole + [rest] * (rest > 0)
    return sizes


def passes_per_step(buckets: list[LengthBucket], microbatch: int | None) -> int:
    """The number of compiled passes of one training step (see `pass_sizes`), counted without
    listing them (a huge batch in slices of one would not fit in memory)."""
    if microbatch is None:
        return len(buckets)
    return sum(-(-bucket.examples // microbatch) for bucket in buckets)


def smallest_microbatch(buckets: list[LengthBucket]) -> int:
    """The smallest train.microbatch whose step holds at most MAX_PASSES_PER_STEP passes
    (the passes fall as the slices grow: a binary search). Needs len(buckets) <= the limit."""
    low, high = 1, max(bucket.examples for bucket in buckets)
    while low < high:
        middle = (low + high) // 2
        if passes_per_step(buckets, middle) <= MAX_PASSES_PER_STEP:
            high = middle
        else:
            low = middle + 1
    return low
